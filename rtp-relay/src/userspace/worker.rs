//! One forwarder thread: owns its streams' sockets and flow state, waits on epoll, reads
//! packets in batches with recvmmsg and writes them with sendmmsg. Nothing here allocates per
//! packet or takes a lock signalling holds (a stream's tap, `log_rtp`, may: it copies); commands
//! arrive over a channel with an eventfd.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::counters::{DropReason, StreamCounters, WorkerCounters};
use crate::flow::{is_rtcp, FlowLimits, StreamFlows, StreamSpec, Verdict};
use crate::forwarder::{NewStream, PacketTap, StreamId, StreamSockets};
use crate::ports::MediaInterface;
use crate::ports::PortLease;
use crate::srtp::contexts::{CryptoDrop, SideContexts};

/// Packets read (and written) per system call.
pub(crate) const BATCH: usize = 32;
/// Large enough for any RTP packet on an Ethernet path (and jumbo-less tunnels).
const BUF: usize = 2048;
const WAKE_TOKEN: u64 = u64::MAX;

pub(crate) enum Command {
    Add(Box<NewStream>),
    /// Boxed: a spec with SRTP keys is large beside the other commands.
    Update(StreamId, Box<StreamSpec>),
    Remove(StreamId),
    Stop,
}

struct Slot {
    id: StreamId,
    sockets: [[UdpSocket; 2]; 2],
    /// Each side's sockets are IPv6 (they take the IPv6 receive headers).
    v6: [bool; 2],
    flows: StreamFlows,
    /// Each side's SRTP contexts (plain sides pass bytes through).
    crypto: [SideContexts; 2],
    counters: Arc<StreamCounters>,
    /// The local addresses of `sockets`, for the tap's copies.
    locals: [[SocketAddr; 2]; 2],
    tap: Option<Arc<dyn PacketTap>>,
    /// Declared after `sockets`: the ports return to the pool once the sockets are closed.
    _leases: [PortLease; 2],
}

pub(crate) struct Worker {
    pub(crate) epoll: Epoll,
    pub(crate) wake: Arc<EventFd>,
    pub(crate) commands: Receiver<Command>,
    pub(crate) counters: Arc<WorkerCounters>,
    pub(crate) epoch: Instant,
    pub(crate) limits: FlowLimits,
    /// The relay's own addresses and ports: packets from them are dropped (a loop).
    pub(crate) own: Arc<[MediaInterface]>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<StreamId, usize>,
}

/// Received packets of one batch: length and source.
type Meta = [(usize, Option<SocketAddr>); BATCH];

impl Worker {
    pub(crate) fn new(
        epoll: Epoll,
        wake: Arc<EventFd>,
        commands: Receiver<Command>,
        counters: Arc<WorkerCounters>,
        epoch: Instant,
        limits: FlowLimits,
        own: Arc<[MediaInterface]>,
    ) -> Self {
        Self {
            epoll,
            wake,
            commands,
            counters,
            epoch,
            limits,
            own,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "never" in the counters.
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn run(mut self) {
        let mut events = [EpollEvent::empty(); 64];
        let mut bufs: Box<[[u8; BUF]; BATCH]> = Box::new([[0; BUF]; BATCH]);
        // Receive headers per address family: recvmmsg leaves each header's address length at
        // what the last datagram into it used, so after an IPv4 datagram (16 bytes) a header
        // would cut an IPv6 source (28) short and report a wrong address. A socket's datagrams
        // all have its family's length, so one set per family always has room.
        let mut rx = [(); 2].map(|()| MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None));
        let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::from(1000u16)) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "media worker cannot wait on epoll; stopping");
                    return;
                }
            };
            // One clock read per wakeup: every packet of it is stamped with the same time.
            let now = self.now_ms();
            // Commands before packets: a flow change (a re-INVITE's new address) that was sent
            // before a packet arrived must apply to it, whatever order epoll lists them in.
            if events[..n].iter().any(|ev| ev.data() == WAKE_TOKEN) {
                let _ = self.wake.read();
                if !self.apply_commands() {
                    return;
                }
            }
            for ev in events[..n].iter().filter(|ev| ev.data() != WAKE_TOKEN) {
                self.serve(ev.data(), now, &mut bufs, &mut rx, &mut tx);
            }
        }
    }

    /// Applies queued commands; false once told to stop (or the relay is gone).
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(s)) => self.add(*s),
                Ok(Command::Update(id, spec)) => {
                    let now = self.now_ms();
                    if let Some(slot) = self.by_id.get(&id).and_then(|&i| self.slots[i].as_mut()) {
                        for (ctx, remote) in slot.crypto.iter_mut().zip(&spec.remotes) {
                            ctx.rekey(remote.crypto);
                        }
                        slot.flows.update(*spec, now);
                    }
                }
                Ok(Command::Remove(id)) => self.remove(id),
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn add(&mut self, s: NewStream) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        for side in 0..2 {
            for comp in 0..2 {
                let token = (idx as u64) << 2 | (side as u64) << 1 | comp as u64;
                if let Err(e) =
                    self.epoll.add(&s.sockets.sockets[side][comp], EpollEvent::new(EpollFlags::EPOLLIN, token))
                {
                    tracing::error!(error = %e, stream = s.id, "cannot watch a media socket");
                }
            }
        }
        let crypto = s.spec.remotes.map(|r| SideContexts::new(r.crypto));
        let flows = StreamFlows::new(s.spec, self.limits, self.now_ms());
        self.by_id.insert(s.id, idx);
        let StreamSockets { sockets, leases, locals } = s.sockets;
        let v6 = [locals[0][0].is_ipv6(), locals[1][0].is_ipv6()];
        self.slots[idx] = Some(Slot {
            id: s.id,
            sockets,
            v6,
            flows,
            crypto,
            counters: s.counters,
            locals,
            tap: s.tap,
            _leases: leases,
        });
        self.counters.streams.fetch_add(1, Relaxed);
    }

    fn remove(&mut self, id: StreamId) {
        let Some(idx) = self.by_id.remove(&id) else { return };
        if let Some(slot) = self.slots[idx].take() {
            for s in slot.sockets.iter().flatten() {
                let _ = self.epoll.delete(s);
            }
            debug_assert_eq!(slot.id, id);
            self.free.push(idx);
            self.counters.streams.fetch_sub(1, Relaxed);
        }
    }

    /// One batch from the socket behind `token`, relayed out of its peer socket.
    fn serve(
        &mut self,
        token: u64,
        now: u64,
        bufs: &mut [[u8; BUF]; BATCH],
        rx: &mut [MultiHeaders<SockaddrStorage>; 2],
        tx: &mut MultiHeaders<SockaddrStorage>,
    ) {
        let (idx, side, comp) = ((token >> 2) as usize, ((token >> 1) & 1) as usize, (token & 1) as usize);
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut) else { return };
        let mut meta: Meta = [(0, None); BATCH];
        let received = {
            let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
            let fd = slot.sockets[side][comp].as_raw_fd();
            let rx = &mut rx[usize::from(slot.v6[side])];
            match recvmmsg(fd, rx, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                Ok(results) => {
                    let mut n = 0;
                    for (m, r) in meta.iter_mut().zip(results) {
                        *m = (r.bytes, r.address.as_ref().and_then(to_std));
                        n += 1;
                    }
                    n
                }
                Err(_) => return,
            }
        };
        if received == 0 {
            return;
        }
        // One wall-clock read per batch, and only for a tapped stream. Only packets of accepted
        // sources are copied: a stranger spraying the port fills no disk.
        let tap = slot.tap.as_ref().map(|t| (t, SystemTime::now(), slot.locals[side][comp]));
        let mut dests: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        let mut order = [0usize; BATCH];
        let mut forwarded = 0;
        let (mut bytes, mut latches, mut drops) = (0u64, 0u64, [0u64; DropReason::COUNT]);
        for i in 0..received {
            let (len, src) = meta[i];
            bytes += len as u64;
            let mut len = len.min(BUF);
            let Some(src) = src else {
                drops[DropReason::Malformed as usize] += 1;
                continue;
            };
            if self.own.iter().any(|i| i.owns(src)) {
                drops[DropReason::OwnSource as usize] += 1;
                continue;
            }
            // SRTP: admitted (source, rate) before the cost of authenticating, and
            // authenticated before latching: a forged packet never moves a latch.
            // SRTCP or SRTP, read once: the header byte it is told by stays plain either way.
            let mux = slot.crypto[side].mux() || slot.crypto[1 - side].mux();
            let rtcp = srtcp(comp, &bufs[i][..len], mux);
            let out = if slot.crypto[side].srtp() {
                if let Err(r) = slot.flows.admit(side, comp, src, &bufs[i][..len], now) {
                    drops[r as usize] += 1;
                    continue;
                }
                // The bytes as they came, for the tap once the packet proves genuine.
                let wire = tap.map(|_| bufs[i][..len].to_vec());
                match slot.crypto[side].unprotect(rtcp, &mut bufs[i], len) {
                    Ok(n) => len = n,
                    Err(e) => {
                        drops[crypto_drop(e) as usize] += 1;
                        continue;
                    }
                }
                let out = slot.flows.accept(side, comp, src, &bufs[i][..len], now);
                if let (Some((tap, at, local)), Some(wire), Verdict::Forward(_)) = (tap, wire, out.verdict) {
                    tap.packet(at, src, local, &wire);
                }
                out
            } else {
                let out = slot.flows.on_packet(side, comp, src, &bufs[i][..len], now);
                if let (Some((tap, at, local)), Verdict::Forward(_)) = (tap, out.verdict) {
                    tap.packet(at, src, local, &bufs[i][..len]);
                }
                out
            };
            latches += u64::from(out.latched);
            match out.verdict {
                Verdict::Forward(dest) => {
                    if slot.crypto[1 - side].srtp() {
                        match slot.crypto[1 - side].protect(rtcp, &mut bufs[i], len) {
                            Ok(n) => len = n,
                            Err(e) => {
                                drops[crypto_drop(e) as usize] += 1;
                                continue;
                            }
                        }
                    }
                    meta[i].0 = len;
                    if let Some((tap, at, _)) = tap {
                        tap.packet(at, slot.locals[1 - side][comp], dest, &bufs[i][..len.min(BUF)]);
                    }
                    dests[forwarded] = Some(SockaddrStorage::from(dest));
                    order[forwarded] = i;
                    forwarded += 1;
                }
                Verdict::Drop(r) => drops[r as usize] += 1,
            }
        }
        let sent = if forwarded > 0 {
            let out_fd = slot.sockets[1 - side][comp].as_raw_fd();
            let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|k| {
                let (len, _) = meta[order[k]];
                [IoSlice::new(if k < forwarded { &bufs[order[k]][..len.min(BUF)] } else { &[] })]
            });
            send_all(out_fd, tx, &slices[..forwarded], &dests[..forwarded])
        } else {
            0
        };
        drops[DropReason::SendError as usize] += (forwarded - sent) as u64;
        let c = &slot.counters.sides[side];
        let w = &self.counters;
        let total = received as u64;
        for (cnt, wcnt, v) in [
            (&c.packets, &w.packets, total),
            (&c.bytes, &w.bytes, bytes),
            (&c.forwarded, &w.forwarded, sent as u64),
            (&c.latches, &w.latches, latches),
        ] {
            if v > 0 {
                cnt.fetch_add(v, Relaxed);
                wcnt.fetch_add(v, Relaxed);
            }
        }
        for (k, &d) in drops.iter().enumerate().filter(|(_, d)| **d > 0) {
            c.drops[k].fetch_add(d, Relaxed);
            w.drops[k].fetch_add(d, Relaxed);
        }
        // Only packets from an accepted source are media activity: a stranger spraying the
        // port must not keep a dead call alive.
        let rejected: u64 = DropReason::ALL.iter().filter(|r| r.is_rejection()).map(|r| drops[*r as usize]).sum();
        if total > rejected {
            c.last_rx_ms.store(now, Relaxed);
        }
    }
}

/// An RTCP packet for SRTP: on the RTCP socket, or an RTCP packet type on the RTP socket when
/// the stream multiplexes (RFC 5761 §4; without `a=rtcp-mux` RTP payload types 64-95 with the
/// marker bit look the same).
fn srtcp(comp: usize, data: &[u8], mux: bool) -> bool {
    comp == crate::flow::RTCP || (mux && is_rtcp(comp, data))
}

fn crypto_drop(e: CryptoDrop) -> DropReason {
    match e {
        CryptoDrop::NoKey => DropReason::SrtpNoKey,
        CryptoDrop::Authentication => DropReason::SrtpAuthentication,
        CryptoDrop::Replay => DropReason::SrtpReplay,
        CryptoDrop::SsrcLimit => DropReason::SrtpSsrcLimit,
        CryptoDrop::Malformed => DropReason::Malformed,
    }
}

/// sendmmsg until everything went or the kernel refuses; returns how many were sent.
fn send_all(
    fd: i32,
    tx: &mut MultiHeaders<SockaddrStorage>,
    slices: &[[IoSlice<'_>; 1]],
    dests: &[Option<SockaddrStorage>],
) -> usize {
    let (mut done, mut failed) = (0, 0);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    while done < slices.len() {
        match sendmmsg(fd, tx, slices[done..].iter(), &dests[done..], no_cmsgs, MsgFlags::MSG_DONTWAIT) {
            Ok(r) => {
                let n = r.count();
                if n == 0 {
                    break;
                }
                done += n;
            }
            Err(Errno::EINTR) => continue,
            // One unreachable destination must not cost the rest of the batch.
            Err(_) => {
                done += 1;
                failed += 1;
            }
        }
    }
    done.min(slices.len()) - failed
}

fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
