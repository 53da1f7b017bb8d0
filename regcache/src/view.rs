//! What one request may read of the registrations, asked for at once and answered as a whole:
//! a [`RegQuery`] names the aliases, AoRs and (contact, source) a request can look up, a
//! [`RegView`] holds the bindings found. Everything the SBC decides for that request reads the
//! view, so the store behind it may answer later (another node's, over the network) without
//! anything waiting inside a lookup.

use std::net::{IpAddr, SocketAddr};

use crate::binding::{alias_of, Binding};

/// The keys a request's handling may look up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegQuery {
    /// Bindings by alias (the Request-URI's user).
    pub aliases: Vec<String>,
    /// Every binding of these AoRs (the Request-URI's, the caller's, a REGISTER's).
    pub aors: Vec<String>,
    /// The binding registered with this contact from this address (`$Ua`).
    pub contact: Option<(String, SocketAddr)>,
}

impl RegQuery {
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty() && self.aors.is_empty() && self.contact.is_none()
    }
}

/// The bindings a [`RegQuery`] found, each once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegView {
    bindings: Vec<Binding>,
    /// The alias the store holds for the query's (contact, source): several AoRs may share
    /// one contact, and the store's index says which one `$Ua` means.
    contact_binding: Option<String>,
}

impl RegView {
    /// A view of `bindings` (a binding found twice is kept once).
    pub fn new(bindings: impl IntoIterator<Item = Binding>) -> Self {
        let mut view = Self::default();
        for b in bindings {
            view.add(b);
        }
        view
    }

    /// Names the binding the query's (contact, source) found (it must be in the view).
    pub fn with_contact_binding(mut self, alias: &str) -> Self {
        self.contact_binding = Some(alias.to_string());
        self
    }

    fn add(&mut self, b: Binding) {
        if !self.bindings.iter().any(|have| have.alias == b.alias) {
            self.bindings.push(b);
        }
    }

    pub fn len(&self) -> usize {
        self.bindings.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn get(&self, alias: &str) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.alias == alias)
    }

    /// The bindings of an AoR the query named.
    pub fn of_aor<'a>(&'a self, aor: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.bindings.iter().filter(move |b| b.aor == aor)
    }

    /// The binding registered with this contact from this address: the one the store named,
    /// else the first in the view.
    pub fn by_contact(&self, contact: &str, source: SocketAddr) -> Option<&Binding> {
        let named = self.contact_binding.as_deref().and_then(|a| self.get(a));
        let matches = |b: &&Binding| b.contact == contact && b.source == source;
        named.filter(matches).or_else(|| self.bindings.iter().find(matches))
    }

    /// The alias of (AoR, contact) from `source_ip`: the one bound already, or a new one (the
    /// query must have named the AoR).
    pub fn alias_for(&self, aor: &str, contact: &str, source_ip: IpAddr) -> String {
        self.of_aor(aor)
            .find(|b| b.contact == contact && b.source.ip() == source_ip)
            .map_or_else(|| alias_of(aor, contact, source_ip), |b| b.alias.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::test_binding;
    use std::time::Instant;

    fn binding(alias: &str, aor: &str, contact: &str, src: &str) -> Binding {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        test_binding(alias, aor, contact, src, Instant::now(), 0)
    }

    #[test]
    fn a_view_answers_what_the_cache_would() {
        let a = binding("a1", "sip:alice@x", "sip:alice@10.0.0.1", "192.0.2.1:5060");
        let b = binding("b1", "sip:bob@x", "sip:bob@10.0.0.2", "192.0.2.2:5070");
        let view = RegView::new([a.clone(), b.clone(), a.clone()]);
        assert_eq!(view.len(), 2, "a binding found twice is kept once");
        assert_eq!(view.get("b1"), Some(&b));
        assert_eq!(view.of_aor("sip:alice@x").collect::<Vec<_>>(), vec![&a]);
        assert_eq!(view.by_contact("sip:bob@10.0.0.2", "192.0.2.2:5070".parse().expect("addr")), Some(&b));
        assert_eq!(view.by_contact("sip:bob@10.0.0.2", "192.0.2.2:5060".parse().expect("addr")), None);
        // Two AoRs registered with one contact from one address: the store's pick is kept.
        let a2 = binding("a2", "sip:alias2@x", "sip:alice@10.0.0.1", "192.0.2.1:5060");
        let src = "192.0.2.1:5060".parse().expect("addr");
        let shared = RegView::new([a.clone(), a2.clone()]);
        assert_eq!(shared.by_contact("sip:alice@10.0.0.1", src), Some(&a));
        assert_eq!(shared.with_contact_binding("a2").by_contact("sip:alice@10.0.0.1", src), Some(&a2));
        let ip = "192.0.2.1".parse().expect("ip");
        assert_eq!(view.alias_for("sip:alice@x", "sip:alice@10.0.0.1", ip), "a1");
        let other = "192.0.2.9".parse().expect("ip");
        assert_eq!(
            view.alias_for("sip:alice@x", "sip:alice@10.0.0.1", other),
            alias_of("sip:alice@x", "sip:alice@10.0.0.1", other)
        );
    }
}
