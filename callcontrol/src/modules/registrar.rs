//! `cc_registrar` (docs/manual/access.md, Registration caching): the local registrar for
//! deployments without an upstream one.
//! The work is signalling (answering REGISTER, retargeting calls to registered contacts), so the
//! B2BUA does it inline, on the shard that owns the request, with the registration cache; this
//! module only makes the name known to profiles and checks its values.
//!
//! Values: `nat_handling` (default yes: calls go to the REGISTER's source address) and
//! `sticky_iface` (default yes: from the interface the REGISTER came in on).

use crate::{CallControl, CcError, Effects, Hook, Verdict};

pub(crate) struct Registrar;

impl CallControl for Registrar {
    fn module(&self) -> &'static str {
        "cc_registrar"
    }

    /// Checks of its values (the B2BUA does the work): nothing to wait for.
    fn may_block(&self, _phase: crate::Phase) -> bool {
        false
    }
    fn start(&self, hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        check(hook)
    }
    fn route(&self, hook: &Hook<'_>, _effects: &mut Effects) -> Result<Verdict, CcError> {
        check(hook)
    }
}

fn check(hook: &Hook<'_>) -> Result<Verdict, CcError> {
    for key in ["nat_handling", "sticky_iface"] {
        if let Some(v) = hook.param(key) {
            profiles::profile::parse_bool(v).map_err(|m| CcError::new("cc_registrar", format!("{key}: {m}")))?;
        }
    }
    Ok(Verdict::Continue)
}
