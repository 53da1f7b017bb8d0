//! The userspace forwarder: one worker thread per core, each owning the streams assigned to it
//! (round robin by stream id, so all four sockets of a stream live on one thread).

mod worker;

use crate::flow::FlowLimits;
use crate::ports::MediaInterface;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::counters::WorkerCounters;
use crate::flow::StreamSpec;
use crate::forwarder::{ForwardError, Forwarder, NewStream, StreamId};
use worker::{Command, Worker};

struct WorkerHandle {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
    counters: Arc<WorkerCounters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

pub struct UserspaceForwarder {
    workers: Vec<WorkerHandle>,
    stopped: AtomicBool,
}

impl std::fmt::Debug for UserspaceForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceForwarder").field("workers", &self.workers.len()).finish()
    }
}

impl UserspaceForwarder {
    /// Starts `workers` threads (at least one). `epoch` is the zero of the counters' times;
    /// packets from `own` (the relay's interfaces) are dropped.
    pub fn start(
        workers: usize,
        epoch: Instant,
        limits: FlowLimits,
        own: Arc<[MediaInterface]>,
    ) -> Result<Self, ForwardError> {
        let mut handles = Vec::new();
        for n in 0..workers.max(1) {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(std::io::Error::from)?;
            let wake = Arc::new(
                EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                    .map_err(std::io::Error::from)?,
            );
            epoll.add(&*wake, EpollEvent::new(EpollFlags::EPOLLIN, u64::MAX)).map_err(std::io::Error::from)?;
            let (tx, rx) = channel();
            let counters = Arc::new(WorkerCounters::default());
            let w = Worker::new(epoll, wake.clone(), rx, counters.clone(), epoch, limits, own.clone());
            let thread = std::thread::Builder::new().name(format!("rtp-{n}")).spawn(move || w.run())?;
            handles.push(WorkerHandle { commands: tx, wake, counters, thread: Mutex::new(Some(thread)) });
        }
        Ok(Self { workers: handles, stopped: AtomicBool::new(false) })
    }

    fn worker_of(&self, id: StreamId) -> &WorkerHandle {
        &self.workers[(id % self.workers.len() as u64) as usize]
    }

    fn send(&self, w: &WorkerHandle, cmd: Command) -> Result<(), ForwardError> {
        let sent = w.commands.send(cmd).is_ok();
        let _ = w.wake.write(1);
        if sent {
            Ok(())
        } else {
            Err(ForwardError::Stopped)
        }
    }

    /// Stops the workers and closes every socket they hold.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for w in &self.workers {
            let _ = self.send(w, Command::Stop);
        }
        for w in &self.workers {
            if let Some(t) = w.thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for UserspaceForwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Forwarder for UserspaceForwarder {
    fn add(&self, stream: NewStream) -> Result<(), ForwardError> {
        self.send(self.worker_of(stream.id), Command::Add(Box::new(stream)))
    }
    fn update(&self, id: StreamId, spec: StreamSpec) {
        let _ = self.send(self.worker_of(id), Command::Update(id, Box::new(spec)));
    }
    fn remove(&self, id: StreamId) {
        let _ = self.send(self.worker_of(id), Command::Remove(id));
    }
    fn worker_counters(&self) -> Vec<Arc<WorkerCounters>> {
        self.workers.iter().map(|w| w.counters.clone()).collect()
    }
}
