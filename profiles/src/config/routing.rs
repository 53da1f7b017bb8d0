//! `routing:`: where new requests go when no profile says (the outbound interface, a global
//! next hop).

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRouting {
    pub(super) outbound_interface: Option<Spanned<String>>,
    pub(super) next_hop: Option<Spanned<String>>,
}
