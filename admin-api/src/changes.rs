//! Configuration changes made through the API, as data: in cluster mode the node that takes
//! one applies it, then asks every other live node to apply the same change
//! ([`Control::spread`]), and the answer says where it holds (`X-Sbc-Scope: cluster`, or the
//! node and `X-Sbc-Cluster-Failures`). A change a node receives is applied there only.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::{ApiError, Control, MapBody};

/// A change of the running configuration, as the API received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConfigChange {
    LoadProfile { name: String, file: String },
    ReloadProfile { name: String },
    ReloadAll,
    SetActiveProfile { chain: String },
    SetRegexMap { name: String, body: MapBody },
}

impl ConfigChange {
    /// Applies the change on this node only (a change another node spread).
    pub fn apply<C: Control>(&self, c: &C) -> Result<(), ApiError> {
        match self {
            Self::LoadProfile { name, file } => c.load_profile(name, file).map(drop),
            Self::ReloadProfile { name } => c.reload_profile(name).map(drop),
            Self::ReloadAll => c.reload_all().map(drop),
            Self::SetActiveProfile { chain } => c.set_active_profile(chain).map(drop),
            Self::SetRegexMap { name, body } => c.set_regex_map(name, body.clone()).map(drop),
        }
    }
}

/// What became of a change on the other live nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Nodes that did not apply it, with why (an error, or no answer); empty: every node did.
    pub failed: Vec<(String, String)>,
}

/// `ok` with the headers that say where the change holds.
pub(crate) fn answer(ok: impl IntoResponse, spread: Option<Spread>) -> Response {
    let mut resp = ok.into_response();
    let Some(spread) = spread else { return resp };
    if spread.failed.is_empty() {
        resp.headers_mut().insert("x-sbc-scope", HeaderValue::from_static("cluster"));
    } else {
        let text = spread.failed.iter().map(|(n, why)| format!("{n}: {why}")).collect::<Vec<_>>().join("; ");
        // (Header values are visible ASCII: anything else in an error message is replaced.)
        let text: String = text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().insert("x-sbc-cluster-failures", v);
        }
    }
    resp
}
