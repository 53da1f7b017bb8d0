//! Registrations shared by the cluster (docs/manual/cluster.md, Registrations). A phone
//! registered through any node is reachable through every node; calls to it go through the
//! node that holds its NAT binding or connection (the binding's `node`), the only address the
//! phone's NAT lets in.
//!
//! In Redis, `<prefix>:reg:<alias>` is a hash: `b` (the binding, JSON), `node` (who holds it)
//! and `gap` (ms from the phone's expiry to the registrar's), living as long as the registrar's
//! binding (`PEXPIRE`): expiry is Redis's, not one node's. `<prefix>:aor:<aor>` (a set of
//! aliases) and `<prefix>:regc:<contact>/<source>` (an alias, `$Ua`) index them; stale index
//! entries are skipped, and the sets' dropped by the lookups that meet them. Times are
//! relative (TTLs), so the nodes' clocks need not agree.
//!
//! Each node keeps the bindings it holds in its own cache ([`RegCache`], with its SQLite store)
//! as well: writes go there at once and to Redis from a writer task, never on a shard. While
//! Redis is down or slow, lookups are answered from that cache (fail open: this node's phones
//! stay reachable through it) and writes are counted as lost; once Redis answers again, the
//! node writes its bindings again, except those another node has taken since (the phone
//! registered there), which it drops. Where a peer's phones are reached is the membership's
//! (`membership.rs`).
//! The scripts name keys they build themselves: one Redis server, not Redis Cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regcache::{Binding, Origin, RegCache, RegQuery, RegView};
use tokio::sync::mpsc;

use crate::connection::{Connection, StoreError};
use crate::membership::Membership;

/// Writes queued for Redis before new ones are counted as lost (and written again later).
const WRITE_QUEUE: usize = 4096;
/// Writes sent in one pipeline.
const WRITE_BATCH: usize = 128;

/// KEYS: the AoR sets, then the contact key if ARGV[2] is '1'. ARGV: the bindings' key
/// prefix, that flag, the aliases. Returns the alias the contact key names ('' if none), then
/// four values per binding found: stored binding, node, gap, ms left.
const LOOKUP: &str = r"
local out = {''}
local seen = {}
local function add(alias)
  if seen[alias] ~= nil then return seen[alias] end
  local k = ARGV[1] .. alias
  local v = redis.call('HMGET', k, 'b', 'node', 'gap')
  local t = redis.call('PTTL', k)
  local found = v[1] ~= false and t > 0
  if found then
    table.insert(out, v[1])
    table.insert(out, v[2] or '')
    table.insert(out, v[3] or '0')
    table.insert(out, tostring(t))
  end
  seen[alias] = found
  return found
end
for i = 3, #ARGV do add(ARGV[i]) end
local sets = #KEYS
if ARGV[2] == '1' then sets = sets - 1 end
for i = 1, sets do
  for _, a in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not add(a) then redis.call('SREM', KEYS[i], a) end
  end
end
if ARGV[2] == '1' then
  local a = redis.call('GET', KEYS[#KEYS])
  if a and add(a) then out[1] = a end
end
return out
";

/// KEYS: the binding, its AoR set, its contact key. ARGV: stored binding, node, gap, ms left,
/// alias, '1' to write only if no other node holds it. Returns 1 if written. `at` is when
/// (Redis's time), for removals that must not undo a later write ([`DELETE`]).
const PUT: &str = r"
if ARGV[6] == '1' then
  local holder = redis.call('HGET', KEYS[1], 'node')
  if holder and holder ~= ARGV[2] then return 0 end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'b', ARGV[1], 'node', ARGV[2], 'gap', ARGV[3],
  'at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[4])
return 1
";

/// KEYS: the binding. ARGV: ms until the phone's registration runs out, node. A re-registration
/// absorbed by this node: it holds the binding from now on. Never brings back a binding that
/// is gone.
const CLAIM: &str = r"
local t = redis.call('PTTL', KEYS[1])
if t <= 0 then return 0 end
local gap = t - tonumber(ARGV[1])
if gap < 0 then gap = 0 end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'gap', gap, 'node', ARGV[2],
  'at', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
return 1
";

/// KEYS: the binding. ARGV: when it was removed (Redis's time, ms; '' if unknown). Removes it
/// unless it was written after that: a removal that reaches Redis late (queued, or held while
/// Redis was away) never undoes a newer registration, through this node or another.
const DELETE: &str = r"
if ARGV[1] ~= '' then
  local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0') or 0
  if at > tonumber(ARGV[1]) then return 0 end
end
return redis.call('DEL', KEYS[1])
";

/// Removals kept for Redis while it was away, at most (beyond, the oldest are forgotten and
/// their bindings expire by themselves).
const TOMBSTONES_MAX: usize = 100_000;

/// What the shared registrations did, for `/metrics`.
#[derive(Debug, Default)]
pub struct RegStats {
    /// Lookups Redis answered.
    pub lookups: AtomicU64,
    /// Lookups answered from this node's own bindings: Redis down or late.
    pub looked_up_locally: AtomicU64,
    pub writes: AtomicU64,
    /// Writes that did not reach Redis (down, late, or the queue full); the node writes its
    /// bindings again when Redis answers.
    pub writes_lost: AtomicU64,
    /// Bindings written again after Redis came back or lost its data.
    pub rewritten: AtomicU64,
    /// Bindings of this node's cache another node had taken meanwhile (dropped here).
    pub taken_over: AtomicU64,
    /// Bindings held by a node that is no longer live: calls go to the phone directly.
    pub holder_gone: AtomicU64,
}

/// The binding as Redis keeps it (times are the key's TTL and `gap`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    alias: String,
    aor: String,
    contact: String,
    source: SocketAddr,
    transport: String,
    interface: String,
    user_agent: String,
    call_id: String,
    ua_call_id: String,
    origin: String,
}

enum Write {
    Put(Box<Binding>),
    Claim {
        alias: String,
        ua_left_ms: u64,
    },
    /// A binding removed at this Redis time (if known).
    Remove {
        alias: String,
        at: Option<u64>,
    },
    /// Removals kept while Redis was away, then this node's bindings, written again.
    Rewrite,
}

/// Registrations shared through Redis, beside this node's own cache.
pub struct SharedRegistrations {
    conn: Arc<Connection>,
    local: Arc<RegCache>,
    node_id: String,
    prefix: String,
    membership: Arc<Membership>,
    writes: mpsc::Sender<Write>,
    /// Writes were lost since the bindings were last written again.
    dirty: AtomicBool,
    /// Removals that did not reach Redis: alias → when (Redis's time, if known).
    tombstones: std::sync::Mutex<std::collections::HashMap<String, Option<u64>>>,
    stats: RegStats,
    lookup: redis::Script,
    put: redis::Script,
    claim: redis::Script,
    delete: redis::Script,
}

#[allow(clippy::disallowed_methods)] // the driver's clock: TTLs to and from the engine's instants
fn now() -> Instant {
    Instant::now()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SharedRegistrations {
    /// The shared registrations of node `node_id`, whose own bindings are `local`, with the
    /// peers `membership` knows; its writer runs on `runtime`.
    pub(crate) fn start(
        conn: Arc<Connection>,
        local: Arc<RegCache>,
        prefix: &str,
        node_id: &str,
        membership: Arc<Membership>,
        runtime: &tokio::runtime::Handle,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let me = Arc::new(Self {
            conn,
            local,
            node_id: node_id.to_string(),
            prefix: prefix.to_string(),
            membership,
            writes: tx,
            // What the cache holds at start (its SQLite store) is written once Redis answers.
            dirty: AtomicBool::new(true),
            tombstones: std::sync::Mutex::default(),
            stats: RegStats::default(),
            lookup: redis::Script::new(LOOKUP),
            put: redis::Script::new(PUT),
            claim: redis::Script::new(CLAIM),
            delete: redis::Script::new(DELETE),
        });
        runtime.spawn(write_loop(me.clone(), rx));
        me
    }

    /// This node's own bindings.
    pub fn local(&self) -> &Arc<RegCache> {
        &self.local
    }

    pub fn stats(&self) -> &RegStats {
        &self.stats
    }

    /// Whether lookups should go to Redis (else this node's bindings answer at once).
    pub fn is_up(&self) -> bool {
        self.conn.is_up()
    }

    fn binding_key(&self, alias: &str) -> String {
        format!("{}:reg:{alias}", self.prefix)
    }
    fn aor_key(&self, aor: &str) -> String {
        format!("{}:aor:{aor}", self.prefix)
    }
    fn contact_key(&self, contact: &str, source: SocketAddr) -> String {
        format!("{}:regc:{contact}/{source}", self.prefix)
    }

    /// Whether `source` is another live node's SIP address.
    pub fn is_peer(&self, source: SocketAddr) -> bool {
        self.membership.is_peer(source)
    }

    /// The key relay headers are signed with, once read.
    pub fn relay_key(&self) -> Option<[u8; 32]> {
        self.membership.relay_key()
    }

    /// The bindings `query` names, from Redis (under the connection's deadline).
    pub async fn lookup(&self, query: &RegQuery) -> Result<RegView, StoreError> {
        let mut inv = self.lookup.prepare_invoke();
        for aor in &query.aors {
            inv.key(self.aor_key(aor));
        }
        if let Some((contact, source)) = &query.contact {
            inv.key(self.contact_key(contact, *source));
        }
        inv.arg(format!("{}:reg:", self.prefix)).arg(if query.contact.is_some() { "1" } else { "0" });
        for alias in &query.aliases {
            inv.arg(alias);
        }
        let inv = &inv;
        let found: Vec<String> = self.conn.run(|mut c| async move { inv.invoke_async(&mut c).await }).await?;
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        Ok(self.view_of(&found, now()))
    }

    /// The bindings a lookup returned, as of `now`.
    fn view_of(&self, found: &[String], now: Instant) -> RegView {
        let mut bindings = Vec::new();
        for row in found.get(1..).unwrap_or_default().chunks_exact(4) {
            let [stored, node, gap, left] = row else { continue };
            let Ok(s) = serde_json::from_str::<Stored>(stored) else {
                tracing::warn!(binding = %stored, "cluster: unreadable registration in Redis skipped");
                continue;
            };
            let Some(origin) = Origin::parse(&s.origin) else { continue };
            let left = Duration::from_millis(left.parse().unwrap_or(0));
            let gap = Duration::from_millis(gap.parse().unwrap_or(0));
            let registrar_expires = now + left;
            let relay = if node == &self.node_id {
                None
            } else {
                self.drop_if_taken(&s.alias, registrar_expires);
                let relay = self.membership.relay(node, &s.interface);
                if relay.is_none() {
                    // The holder died (or never said where it listens): the phone's NAT
                    // may still let a direct request in (a moved address, a full-cone NAT).
                    self.stats.holder_gone.fetch_add(1, Ordering::Relaxed);
                }
                relay
            };
            bindings.push(Binding {
                alias: s.alias,
                aor: s.aor,
                contact: s.contact,
                source: s.source,
                transport: s.transport,
                interface: s.interface,
                user_agent: s.user_agent,
                call_id: s.call_id,
                ua_call_id: s.ua_call_id,
                ua_expires: registrar_expires.checked_sub(gap).unwrap_or(now).max(now),
                registrar_expires,
                origin,
                relay,
            });
        }
        let view = RegView::new(bindings);
        match found.first().filter(|a| !a.is_empty()) {
            Some(alias) if view.get(alias).is_some() => view.with_contact_binding(alias),
            _ => view,
        }
    }

    /// Another node holds `alias` now, registered until `theirs`: a copy here that is not
    /// newer (the phone registered there since) leaves this node's cache, which answers
    /// lookups while Redis is away and is written back to Redis when it returns.
    fn drop_if_taken(&self, alias: &str, theirs: Instant) {
        if self.local.get(alias).is_some_and(|mine| mine.registrar_expires <= theirs) {
            self.local.remove(alias);
            self.stats.taken_over.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn queue(&self, w: Write) {
        if let Err(e) = self.writes.try_send(w) {
            self.lost(std::slice::from_ref(&e.into_inner()));
        }
    }

    /// Writes that did not reach Redis: removals are kept to be sent again, the rest is
    /// written again from this node's cache.
    fn lost(&self, writes: &[Write]) {
        self.stats.writes_lost.fetch_add(writes.len() as u64, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        let Ok(mut tombs) = self.tombstones.lock() else { return };
        for w in writes {
            if let Write::Remove { alias, at } = w {
                if tombs.len() < TOMBSTONES_MAX {
                    tombs.insert(alias.clone(), *at);
                }
            }
        }
    }

    /// A binding this node now holds (a REGISTER came through it).
    pub fn put(&self, mut binding: Binding) {
        binding.relay = None;
        self.local.put(binding.clone());
        self.queue(Write::Put(Box::new(binding)));
    }

    /// A re-registration this node absorbed: it holds the binding from now on.
    pub fn claim(&self, binding: &Binding, ua_expires: Instant) {
        if !self.local.set_ua_expires(&binding.alias, ua_expires) {
            let mut b = binding.clone();
            b.relay = None;
            b.ua_expires = ua_expires;
            self.local.put(b);
        }
        let ua_left_ms = ms(ua_expires.saturating_duration_since(now()));
        self.queue(Write::Claim { alias: binding.alias.clone(), ua_left_ms });
    }

    pub fn remove(&self, alias: &str) {
        self.local.remove(alias);
        self.queue(Write::Remove { alias: alias.to_string(), at: self.membership.redis_now() });
    }

    /// Adds `binding`'s write to `pipe` (`only_if_ours`: unless another node holds it).
    fn put_into(&self, pipe: &mut redis::Pipeline, b: &Binding, only_if_ours: bool, now: Instant) -> bool {
        let left = ms(b.registrar_expires.saturating_duration_since(now));
        if left == 0 {
            return false;
        }
        let stored = Stored {
            alias: b.alias.clone(),
            aor: b.aor.clone(),
            contact: b.contact.clone(),
            source: b.source,
            transport: b.transport.clone(),
            interface: b.interface.clone(),
            user_agent: b.user_agent.clone(),
            call_id: b.call_id.clone(),
            ua_call_id: b.ua_call_id.clone(),
            origin: b.origin.as_str().to_string(),
        };
        let Ok(json) = serde_json::to_string(&stored) else { return false };
        let gap = ms(b.registrar_expires.saturating_duration_since(b.ua_expires));
        let mut inv = self.put.prepare_invoke();
        inv.key(self.binding_key(&b.alias)).key(self.aor_key(&b.aor)).key(self.contact_key(&b.contact, b.source));
        inv.arg(json).arg(&self.node_id).arg(gap).arg(left).arg(&b.alias).arg(if only_if_ours { "1" } else { "0" });
        pipe.invoke_script(&inv);
        true
    }

    /// Sends a batch of writes in one pipeline.
    async fn write(&self, batch: &[Write]) -> Result<(), StoreError> {
        let now = now();
        let mut pipe = redis::pipe();
        pipe.load_script(&self.put).ignore().load_script(&self.claim).ignore().load_script(&self.delete).ignore();
        for w in batch {
            match w {
                Write::Put(b) => {
                    if self.put_into(&mut pipe, b, false, now) {
                        pipe.ignore();
                    }
                }
                Write::Claim { alias, ua_left_ms } => {
                    let mut inv = self.claim.prepare_invoke();
                    inv.key(self.binding_key(alias)).arg(ua_left_ms).arg(&self.node_id);
                    pipe.invoke_script(&inv).ignore();
                }
                Write::Remove { alias, at } => {
                    self.delete_into(&mut pipe, alias, *at);
                    pipe.ignore();
                }
                // (Sent on its own by the writer.)
                Write::Rewrite => {}
            }
        }
        let pipe = &pipe;
        self.conn.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    fn delete_into(&self, pipe: &mut redis::Pipeline, alias: &str, at: Option<u64>) {
        let mut inv = self.delete.prepare_invoke();
        inv.key(self.binding_key(alias)).arg(at.map(|t| t.to_string()).unwrap_or_default());
        pipe.invoke_script(&inv);
    }

    /// The renewer's turn (every third of the lease): has the writer send the removals kept
    /// while Redis was away and this node's bindings again, if writes were lost (`lost`: Redis
    /// lost its data). Through the writer, so nothing it sends meanwhile is undone.
    pub(crate) fn refresh(&self, lost: bool) {
        if (lost || self.dirty.swap(false, Ordering::Relaxed)) && self.writes.try_send(Write::Rewrite).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Sends the removals kept while Redis was away (unless this node has the binding again),
    /// then writes this node's bindings again, unless another node took them meanwhile (the
    /// phone registered there): those leave this node's cache.
    async fn rewrite(&self) -> Result<(), StoreError> {
        let tombs: Vec<(String, Option<u64>)> =
            self.tombstones.lock().map(|t| t.iter().map(|(a, at)| (a.clone(), *at)).collect()).unwrap_or_default();
        for chunk in tombs.chunks(WRITE_BATCH) {
            let mut pipe = redis::pipe();
            pipe.load_script(&self.delete).ignore();
            for (alias, at) in chunk.iter().filter(|(a, _)| self.local.get(a).is_none()) {
                self.delete_into(&mut pipe, alias, *at);
                pipe.ignore();
            }
            let pipe = &pipe;
            self.conn.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
            if let Ok(mut t) = self.tombstones.lock() {
                for (alias, _) in chunk {
                    t.remove(alias);
                }
            }
        }
        let mine = self.local.all();
        for chunk in mine.chunks(WRITE_BATCH) {
            let now = now();
            let mut pipe = redis::pipe();
            pipe.load_script(&self.put).ignore();
            let sent: Vec<&Binding> = chunk.iter().filter(|b| self.put_into(&mut pipe, b, true, now)).collect();
            let pipe = &pipe;
            let written: Vec<i64> = self.conn.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
            for (b, w) in sent.iter().zip(written) {
                if w == 1 {
                    self.stats.rewritten.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.taken_over.fetch_add(1, Ordering::Relaxed);
                    self.local.remove(&b.alias);
                }
            }
        }
        Ok(())
    }
}

/// Sends queued writes in batches, one pipeline each, and the rewrites the renewer asks for in
/// their turn; while Redis is down writes are counted as lost (removals kept, the bindings
/// written again once it answers).
async fn write_loop(regs: Arc<SharedRegistrations>, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let rewrite = batch.iter().any(|w| matches!(w, Write::Rewrite));
        batch.retain(|w| !matches!(w, Write::Rewrite));
        if !batch.is_empty() {
            if !regs.conn.is_up() {
                regs.lost(&batch);
            } else {
                match regs.write(&batch).await {
                    Ok(()) => {
                        regs.stats.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => regs.lost(&batch),
                }
            }
        }
        if rewrite && (!regs.conn.is_up() || regs.rewrite().await.is_err()) {
            regs.dirty.store(true, Ordering::Relaxed);
        }
        batch.clear();
    }
}
