//! The in-memory cache: bindings by alias, with indexes by AoR and by (contact, source).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::binding::{alias_of, Binding};
use crate::view::{RegQuery, RegView};

/// Where changes go to survive a restart. Both hooks default to nothing.
pub trait Persist: Send + Sync {
    fn saved(&self, _binding: &Binding) {}
    fn removed(&self, _alias: &str) {}
}

/// No persistence: the cache lives as long as the process.
#[derive(Debug, Default)]
pub struct NoPersist;
impl Persist for NoPersist {}

#[derive(Default)]
struct Inner {
    by_alias: HashMap<String, Binding>,
    by_aor: HashMap<String, BTreeSet<String>>,
    /// `contact/ip:port` → alias (`$Ua`).
    by_contact: HashMap<String, String>,
}

fn contact_key(contact: &str, source: SocketAddr) -> String {
    format!("{contact}/{source}")
}

impl Inner {
    fn insert(&mut self, b: Binding) {
        if let Some(old) = self.by_alias.get(&b.alias) {
            let key = contact_key(&old.contact, old.source);
            self.by_contact.remove(&key);
            if old.aor != b.aor {
                let aor = old.aor.clone();
                self.unlink_aor(&aor, &b.alias);
            }
        }
        self.by_aor.entry(b.aor.clone()).or_default().insert(b.alias.clone());
        self.by_contact.insert(contact_key(&b.contact, b.source), b.alias.clone());
        self.by_alias.insert(b.alias.clone(), b);
    }

    fn remove(&mut self, alias: &str) -> Option<Binding> {
        let b = self.by_alias.remove(alias)?;
        self.by_contact.remove(&contact_key(&b.contact, b.source));
        self.unlink_aor(&b.aor, alias);
        Some(b)
    }

    fn unlink_aor(&mut self, aor: &str, alias: &str) {
        if let Some(set) = self.by_aor.get_mut(aor) {
            set.remove(alias);
            if set.is_empty() {
                self.by_aor.remove(aor);
            }
        }
    }
}

/// The registration cache shared by every shard.
pub struct RegCache {
    inner: RwLock<Inner>,
    persist: Box<dyn Persist>,
}

impl std::fmt::Debug for RegCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegCache").field("bindings", &self.len()).finish()
    }
}

impl Default for RegCache {
    fn default() -> Self {
        Self::in_memory()
    }
}

impl RegCache {
    pub fn new(persist: Box<dyn Persist>) -> Self {
        Self { inner: RwLock::new(Inner::default()), persist }
    }

    pub fn in_memory() -> Self {
        Self::new(Box::new(NoPersist))
    }

    // A panic while holding the lock cannot leave the maps inconsistent in a way that matters
    // more than losing every registration, so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts back bindings read from the store at start (not written again).
    pub fn restore(&self, bindings: impl IntoIterator<Item = Binding>) {
        let mut inner = self.write();
        for b in bindings {
            inner.insert(b);
        }
    }

    pub fn len(&self) -> usize {
        self.read().by_alias.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The alias of (AoR, contact) from `source_ip`: the cached one, or a new one.
    pub fn alias_for(&self, aor: &str, contact: &str, source_ip: IpAddr) -> String {
        let inner = self.read();
        let existing = inner.by_aor.get(aor).and_then(|set| {
            set.iter()
                .find(|a| inner.by_alias.get(*a).is_some_and(|b| b.contact == contact && b.source.ip() == source_ip))
        });
        existing.cloned().unwrap_or_else(|| alias_of(aor, contact, source_ip))
    }

    pub fn get(&self, alias: &str) -> Option<Binding> {
        self.read().by_alias.get(alias).cloned()
    }

    /// Every binding of an AoR.
    pub fn of_aor(&self, aor: &str) -> Vec<Binding> {
        let inner = self.read();
        inner
            .by_aor
            .get(aor)
            .map(|set| set.iter().filter_map(|a| inner.by_alias.get(a).cloned()).collect())
            .unwrap_or_default()
    }

    /// The binding registered with this contact from this address (`$Ua`).
    pub fn by_contact(&self, contact: &str, source: SocketAddr) -> Option<Binding> {
        let inner = self.read();
        inner.by_contact.get(&contact_key(contact, source)).and_then(|a| inner.by_alias.get(a).cloned())
    }

    /// The bindings `query` names, read under one lock.
    pub fn view(&self, query: &RegQuery) -> RegView {
        let inner = self.read();
        let by_alias = query.aliases.iter().filter_map(|a| inner.by_alias.get(a));
        let by_aor = query
            .aors
            .iter()
            .filter_map(|aor| inner.by_aor.get(aor))
            .flat_map(|set| set.iter().filter_map(|a| inner.by_alias.get(a)));
        let by_contact = query
            .contact
            .as_ref()
            .and_then(|(c, src)| inner.by_contact.get(&contact_key(c, *src)).and_then(|a| inner.by_alias.get(a)));
        let view = RegView::new(by_alias.chain(by_aor).chain(by_contact).cloned());
        match by_contact {
            Some(b) => view.with_contact_binding(&b.alias),
            None => view,
        }
    }

    /// Adds or replaces a binding. (The store hears of changes under the lock, so it sees them
    /// in the order the cache made them.)
    pub fn put(&self, b: Binding) {
        let mut inner = self.write();
        self.persist.saved(&b);
        inner.insert(b);
    }

    /// Sets when the phone's registration of `alias` runs out (an absorbed re-registration),
    /// if the binding is still there; whether it was.
    pub fn set_ua_expires(&self, alias: &str, ua_expires: Instant) -> bool {
        let mut inner = self.write();
        let Some(b) = inner.by_alias.get_mut(alias) else { return false };
        b.ua_expires = ua_expires;
        self.persist.saved(b);
        true
    }

    pub fn remove(&self, alias: &str) -> Option<Binding> {
        let mut inner = self.write();
        let removed = inner.remove(alias);
        if removed.is_some() {
            self.persist.removed(alias);
        }
        removed
    }

    /// Removes every binding whose registrar-side expiry has passed; returns how many.
    pub fn collect_expired(&self, now: Instant) -> usize {
        let expired: Vec<String> = {
            let inner = self.read();
            inner.by_alias.values().filter(|b| b.registrar_expires <= now).map(|b| b.alias.clone()).collect()
        };
        let mut n = 0;
        for alias in expired {
            // Re-checked under the write lock: a REGISTER may have refreshed it meanwhile.
            let mut inner = self.write();
            if inner.by_alias.get(&alias).is_some_and(|b| b.registrar_expires <= now) {
                inner.remove(&alias);
                self.persist.removed(&alias);
                n += 1;
            }
        }
        n
    }

    /// Every binding (admin listing, tests).
    pub fn all(&self) -> Vec<Binding> {
        self.read().by_alias.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::test_binding;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);
    impl Persist for Arc<Log> {
        fn saved(&self, b: &Binding) {
            self.0.lock().expect("log").push(format!("+{}", b.alias));
        }
        fn removed(&self, alias: &str) {
            self.0.lock().expect("log").push(format!("-{alias}"));
        }
    }

    #[test]
    fn indexes_follow_puts_removes_and_expiry() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let now = Instant::now();
        let log = Arc::new(Log::default());
        let cache = RegCache::new(Box::new(log.clone()));
        let a = cache.alias_for("sip:a@x", "sip:a@10.0.0.1", "127.0.0.1".parse().expect("ip"));
        assert_eq!(a.len(), 16);
        cache.put(test_binding(&a, "sip:a@x", "sip:a@10.0.0.1", "127.0.0.1:5070", now, 60));
        cache.put(test_binding("other", "sip:a@x", "sip:a@10.0.0.2", "127.0.0.2:5060", now, 10));
        assert_eq!(cache.alias_for("sip:a@x", "sip:a@10.0.0.1", "127.0.0.1".parse().expect("ip")), a);
        assert_eq!(cache.of_aor("sip:a@x").len(), 2);
        assert_eq!(
            cache.by_contact("sip:a@10.0.0.1", "127.0.0.1:5070".parse().expect("addr")).map(|b| b.alias),
            Some(a.clone())
        );
        assert_eq!(cache.get("other").map(|b| b.source_text()).as_deref(), Some("127.0.0.2"));
        assert_eq!(cache.collect_expired(now + Duration::from_secs(30)), 1);
        assert!(cache.get("other").is_none());
        assert_eq!(cache.of_aor("sip:a@x").len(), 1);
        let query = RegQuery {
            aliases: vec![a.clone(), "none".into()],
            aors: vec!["sip:a@x".into()],
            contact: Some(("sip:a@10.0.0.1".into(), "127.0.0.1:5070".parse().expect("addr"))),
        };
        let view = cache.view(&query);
        assert_eq!(view.len(), 1, "one binding, named three ways");
        assert_eq!(
            view.by_contact("sip:a@10.0.0.1", "127.0.0.1:5070".parse().expect("addr")).map(|b| &b.alias),
            Some(&a)
        );
        assert_eq!(view.get(&a), cache.get(&a).as_ref());
        let later = now + Duration::from_secs(5);
        assert!(cache.set_ua_expires(&a, later) && cache.get(&a).is_some_and(|b| b.ua_expires == later));
        assert!(!cache.set_ua_expires("none", later), "no binding is made up");
        assert!(cache.view(&RegQuery { aors: vec!["sip:b@x".into()], ..RegQuery::default() }).is_empty());
        cache.remove(&a);
        assert!(cache.is_empty() && cache.of_aor("sip:a@x").is_empty());
        assert_eq!(
            *log.0.lock().expect("log"),
            vec![format!("+{a}"), "+other".into(), "-other".into(), format!("+{a}"), format!("-{a}")]
        );
    }
}
