//! Raft's hot path on one long-lived stream per peer. Append-entries, votes,
//! forwarded writes and read-index requests travel as numbered frames on a
//! stream kept open to each peer, instead of each opening a request-response
//! stream of its own (a negotiation, a timer and two trips through the swarm
//! task per message). Answers come back in any order, matched by number.
//!
//! Everything else, and any message over [`MAX_MESH_LINK_FRAME_BYTES`], keeps the
//! request-response protocol; so does every message while no link to the
//! peer is open (not connected yet, being opened, or a peer that does not
//! speak [`LINK_PROTOCOL`]), so a link only ever saves work.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{oneshot, Semaphore};
use zeromesh_protocol::limits::{MAX_MESH_CONNECTIONS, MAX_MESH_LINK_FRAME_BYTES, MAX_MESH_REQUESTS_IN_FLIGHT};

use super::codec::{encode_frame, read_frame};
use super::messages::{MeshError, MeshRequest, MeshResponse};
use super::swarm::{InboundHandler, MeshSendError};
use crate::lock;

/// The protocol name, versioned like the request-response one.
pub const LINK_PROTOCOL: StreamProtocol = StreamProtocol::new("/zeromesh/link/1");

/// Links a peer may have open to this node at once (a reopened link may
/// overlap the one it replaces for a moment).
const MAX_INBOUND_LINKS_PER_PEER: usize = 2;

/// How long a link takes to open before the attempt is given up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The byte a node writes first on a link it serves: until it has come, the
/// opener sends nothing on it, so a link the receiver dropped unread (over
/// a bound, or arriving faster than it accepts them) never loses a request.
const READY: u8 = 0x5a;

/// After a failed open (a peer without the protocol, say), messages to that
/// peer take the request-response protocol this long before trying again.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

/// A request as it travels on a link: its number and the message.
pub type RequestFrame = (u64, MeshRequest);
/// An answer: the request's number and the response, or `None` when the
/// receiver dropped the request (the test switch cuts traffic from the sender).
pub type AnswerFrame = (u64, Option<MeshResponse>);

/// Callers waiting for an answer, by request number.
type Waiting = Mutex<HashMap<u64, oneshot::Sender<Option<MeshResponse>>>>;

/// An open link to one peer.
pub struct Link {
    peer: PeerId,
    counters: Arc<LinkCounters>,
    writer: tokio::sync::Mutex<WriteHalf<Stream>>,
    waiting: Arc<Waiting>,
    next_number: AtomicU64,
    open: Arc<AtomicBool>,
    reader: tokio::task::AbortHandle,
}

impl Link {
    fn start(peer: PeerId, stream: Stream, counters: Arc<LinkCounters>) -> Arc<Link> {
        let (reader, writer) = stream.split();
        let waiting = Arc::new(Waiting::default());
        let open = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read_answers(peer, reader, waiting.clone(), open.clone())).abort_handle();
        Arc::new(Link {
            peer,
            counters,
            writer: tokio::sync::Mutex::new(writer),
            waiting,
            next_number: AtomicU64::new(0),
            open,
            reader,
        })
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Gives the link up: no new request takes it, callers waiting learn it
    /// closed, and the stream closes once the last caller lets go of it.
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.reader.abort();
        lock(&self.waiting).clear();
    }

    /// The frame of `request`, or `None` when it is too large for a link.
    pub fn frame(&self, request: &MeshRequest) -> Option<(u64, Vec<u8>)> {
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_frame(&(number, request), MAX_MESH_LINK_FRAME_BYTES).ok()?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        Some((number, bytes))
    }

    /// Sends a request's frame and waits at most `timeout` for its answer.
    pub async fn call(
        &self,
        (number, frame): (u64, Vec<u8>),
        timeout: Duration,
    ) -> Result<MeshResponse, MeshSendError> {
        let peer = self.peer;
        let lost = |reason: &str| MeshSendError::Lost { peer, reason: reason.to_owned() };
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= MAX_MESH_REQUESTS_IN_FLIGHT {
                let reason = format!("{MAX_MESH_REQUESTS_IN_FLIGHT} requests already wait on the link to the peer");
                return Err(MeshSendError::Failed { peer, reason });
            }
            waiting.insert(number, reply);
        }
        // Registered before this check: a link that closes after it drops
        // the reply channel, so the wait below ends.
        if !self.is_open() {
            lock(&self.waiting).remove(&number);
            return Err(MeshSendError::Unreachable { peer, reason: "the link to the peer closed".into() });
        }
        let exchange = async {
            let written = async {
                let mut writer = self.writer.lock().await;
                // A frame cut short (the caller's deadline passed during
                // the write) would garble the stream: the link closes then.
                let mut unfinished = CloseOnDrop(Some(self));
                writer.write_all(&frame).await?;
                writer.flush().await?;
                unfinished.0 = None;
                io::Result::Ok(())
            };
            if let Err(error) = written.await {
                tracing::debug!(%peer, %error, "mesh link write failed");
                return Err(lost(&format!("the link to the peer failed: {error}")));
            }
            match answer.await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(lost("the peer dropped the request")),
                Err(_) => Err(lost("the link to the peer closed")),
            }
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        lock(&self.waiting).remove(&number);
        result.unwrap_or(Err(MeshSendError::Timeout { peer, timeout_ms: timeout.as_millis() as u64 }))
    }
}

/// Closes the link it holds when dropped.
struct CloseOnDrop<'a>(Option<&'a Link>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.0 {
            link.close();
        }
    }
}

/// Hands each answer to its caller until the link fails; then every caller
/// still waiting learns it closed.
async fn read_answers(peer: PeerId, mut reader: ReadHalf<Stream>, waiting: Arc<Waiting>, open: Arc<AtomicBool>) {
    loop {
        match read_frame::<_, AnswerFrame>(&mut reader, MAX_MESH_LINK_FRAME_BYTES).await {
            Ok((number, answer)) => {
                // A caller that gave up is no longer waiting.
                if let Some(reply) = lock(&waiting).remove(&number) {
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "mesh link closed");
                break;
            }
        }
    }
    open.store(false, Ordering::SeqCst);
    lock(&waiting).clear();
}

#[derive(Default)]
struct Slot {
    link: Option<Arc<Link>>,
    opening: bool,
    reopen_at: Option<Instant>,
}

/// Counters of the links, for metrics.
#[derive(Default)]
pub struct LinkCounters {
    /// Links this node opened.
    pub opened: AtomicU64,
    /// Requests this node sent on links (counted by [`Link::frame`]).
    pub requests: AtomicU64,
    /// Requests peers sent this node on links.
    pub served: AtomicU64,
}

/// This node's links to its peers, opened on first use.
pub struct Links {
    control: Mutex<libp2p_stream::Control>,
    slots: Arc<Mutex<HashMap<PeerId, Slot>>>,
    pub counters: Arc<LinkCounters>,
}

impl Links {
    pub fn new(control: libp2p_stream::Control) -> Links {
        Links { control: Mutex::new(control), slots: Arc::default(), counters: Arc::default() }
    }

    /// The open link to `peer`, if there is one. Without one, starts opening
    /// it in the background when `connected` (the caller sends this message
    /// the other way meanwhile).
    pub fn link(&self, peer: PeerId, connected: bool) -> Option<Arc<Link>> {
        let mut slots = lock(&self.slots);
        if !slots.contains_key(&peer) && slots.len() >= MAX_MESH_CONNECTIONS as usize {
            // Peers gone for good leave nothing behind.
            slots.retain(|_, slot| slot.opening || slot.link.as_ref().is_some_and(|link| link.is_open()));
        }
        let slot = slots.entry(peer).or_default();
        if let Some(link) = &slot.link {
            if link.is_open() {
                return Some(link.clone());
            }
            slot.link = None;
        }
        let waiting_to_reopen = slot.reopen_at.is_some_and(|at| Instant::now() < at);
        if slot.opening || !connected || waiting_to_reopen {
            return None;
        }
        slot.opening = true;
        let mut control = lock(&self.control).clone();
        let (slots, counters) = (self.slots.clone(), self.counters.clone());
        tokio::spawn(async move {
            let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
                let mut stream = control.open_stream(peer, LINK_PROTOCOL).await.map_err(|error| error.to_string())?;
                let mut ready = [0u8];
                match stream.read_exact(&mut ready).await {
                    Ok(()) if ready[0] == READY => Ok(stream),
                    Ok(()) => Err(format!("the peer began the link with {:#x}", ready[0])),
                    Err(error) => Err(format!("the peer closed the link before it was ready: {error}")),
                }
            })
            .await;
            let mut slots = lock(&slots);
            let slot = slots.entry(peer).or_default();
            slot.opening = false;
            match opened {
                Ok(Ok(stream)) => {
                    counters.opened.fetch_add(1, Ordering::Relaxed);
                    slot.link = Some(Link::start(peer, stream, counters));
                    slot.reopen_at = None;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "mesh link not opened");
                    slot.reopen_at = Some(Instant::now() + REOPEN_AFTER);
                }
                Err(_) => {
                    tracing::debug!(%peer, "mesh link not opened within {OPEN_TIMEOUT:?}");
                    slot.reopen_at = Some(Instant::now() + REOPEN_AFTER);
                }
            }
        });
        None
    }
}

/// What the inbound side of links needs from the swarm's owner.
pub struct LinkService {
    pub handler: Arc<dyn InboundHandler>,
    /// The permits of inbound requests in flight, shared with the
    /// request-response protocol.
    pub slots: Arc<Semaphore>,
    /// Whether the test switch cuts traffic from a peer.
    pub is_isolated: Box<dyn Fn(&PeerId) -> bool + Send + Sync>,
    /// Counts a request refused because every permit was taken.
    pub refused_busy: Box<dyn Fn() + Send + Sync>,
    pub counters: Arc<LinkCounters>,
}

/// Serves the links peers open to this node, each in a task of its own, at
/// most [`MAX_MESH_CONNECTIONS`] at once and [`MAX_INBOUND_LINKS_PER_PEER`]
/// from one peer; a link over either bound is closed at once. When
/// `refuse` turns true (a test switch: the node then acts as one that
/// predates links), stops: the protocol is no longer offered and the links
/// peers opened close.
pub async fn serve_links(
    mut incoming: libp2p_stream::IncomingStreams,
    service: LinkService,
    mut refuse: tokio::sync::watch::Receiver<bool>,
) {
    let service = Arc::new(service);
    let links = Arc::new(Semaphore::new(MAX_MESH_CONNECTIONS as usize));
    let per_peer: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
    let mut serving = tokio::task::JoinSet::new();
    loop {
        let (peer, stream) = tokio::select! {
            next = incoming.next() => match next {
                Some(next) => next,
                None => return,
            },
            // Returning drops `incoming` (the protocol is no longer offered)
            // and `serving` (which aborts every link's task).
            _ = refuse.wait_for(|refuse| *refuse) => return,
            // Finished links' tasks are reaped here.
            Some(_) = serving.join_next(), if !serving.is_empty() => continue,
        };
        let Ok(permit) = links.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "mesh link refused: too many links");
            continue;
        };
        {
            let mut per_peer = lock(&per_peer);
            let count = per_peer.entry(peer).or_default();
            if *count >= MAX_INBOUND_LINKS_PER_PEER {
                tracing::debug!(%peer, "mesh link refused: the peer has {count} open");
                continue;
            }
            *count += 1;
        }
        let (service, per_peer) = (service.clone(), per_peer.clone());
        serving.spawn(async move {
            serve_link(peer, stream, &service).await;
            drop(permit);
            let mut per_peer = lock(&per_peer);
            if let Some(count) = per_peer.get_mut(&peer) {
                *count -= 1;
                if *count == 0 {
                    per_peer.remove(&peer);
                }
            }
        });
    }
}

/// Reads requests from one link until it fails, handling each in a task of
/// its own and writing its answer when done.
async fn serve_link(peer: PeerId, stream: Stream, service: &LinkService) {
    let (mut reader, mut writer) = stream.split();
    if let Err(error) = async {
        writer.write_all(&[READY]).await?;
        writer.flush().await
    }
    .await
    {
        tracing::debug!(%peer, %error, "inbound mesh link closed before it was ready");
        return;
    }
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    loop {
        let (number, request) = match read_frame::<_, RequestFrame>(&mut reader, MAX_MESH_LINK_FRAME_BYTES).await {
            Ok(frame) => frame,
            Err(error) => {
                tracing::debug!(%peer, %error, "inbound mesh link closed");
                return;
            }
        };
        service.counters.served.fetch_add(1, Ordering::Relaxed);
        if (service.is_isolated)(&peer) {
            if answer(&writer, number, None).await.is_err() {
                return;
            }
            continue;
        }
        let Ok(slot) = service.slots.clone().try_acquire_owned() else {
            (service.refused_busy)();
            let busy = MeshResponse::Refused(MeshError::Unavailable(format!(
                "node is handling {MAX_MESH_REQUESTS_IN_FLIGHT} mesh requests already; retry shortly"
            )));
            if answer(&writer, number, Some(busy)).await.is_err() {
                return;
            }
            continue;
        };
        let (handler, writer) = (service.handler.clone(), writer.clone());
        tokio::spawn(async move {
            let response = handler.handle(peer, request).await;
            drop(slot);
            // A failed write fails the link's reader too, which ends it.
            let _ = answer(&writer, number, Some(response)).await;
        });
    }
}

async fn answer(
    writer: &tokio::sync::Mutex<WriteHalf<Stream>>,
    number: u64,
    response: Option<MeshResponse>,
) -> io::Result<()> {
    let frame: AnswerFrame = (number, response);
    let bytes = encode_frame(&frame, MAX_MESH_LINK_FRAME_BYTES).or_else(|error| {
        let refused =
            MeshResponse::Refused(MeshError::Unavailable(format!("the answer does not fit a mesh link: {error}")));
        encode_frame(&(number, Some(refused)), MAX_MESH_LINK_FRAME_BYTES)
    })?;
    let mut writer = writer.lock().await;
    writer.write_all(&bytes).await?;
    writer.flush().await
}
