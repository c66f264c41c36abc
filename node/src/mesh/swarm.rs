//! The libp2p swarm of one node and the task that owns it. The swarm is one
//! behaviour composed of small ones (connection limits, identify, ping,
//! kademlia, gossipsub, request-response, and the streams of the links);
//! the rest of the node talks to it through a [`MeshHandle`], and answers
//! inbound requests through an [`InboundHandler`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{connection_limits, gossipsub, identify, identity::Keypair, kad, noise, ping, tcp, yamux};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, Semaphore};
use zeromesh_protocol::limits::{
    MAX_ADVERT_ADDRESSES, MAX_ADVERT_BYTES, MAX_MESH_CONNECTIONS, MAX_MESH_REQUESTS_IN_FLIGHT,
    MAX_MESH_STREAMS_PER_CONNECTION, MAX_OFFLOAD_MESSAGE_BYTES, MAX_OFFLOAD_QUEUED, MAX_OFFLOAD_SENT_IN_FLIGHT,
    MAX_OFFLOAD_SERVED_IN_FLIGHT, MAX_OFFLOAD_STREAMS_PER_CONNECTION, MAX_PLUGIN_WALL_CLOCK_MS,
};

use super::advert::{AdvertTable, SignedAdvert, ADVERT_TOPIC};
use super::codec::{BincodeCodec, MESH_PROTOCOL};
use super::link::{serve_links, LinkService, Links, LINK_PROTOCOL};
use super::messages::{MeshError, MeshRequest, MeshResponse};
use super::offload::{OffloadMessage, OffloadResponse, OFFLOAD_PROTOCOL};
use crate::lock;

/// Answers requests that other nodes send to this one.
pub trait InboundHandler: Send + Sync + 'static {
    fn handle(&self, peer: PeerId, request: MeshRequest) -> BoxFuture<'static, MeshResponse>;
}

/// Runs plugin calls that peers offload to this node.
pub trait OffloadHandler: Send + Sync + 'static {
    fn handle(&self, peer: PeerId, message: OffloadMessage) -> BoxFuture<'static, OffloadResponse>;
}

type OffloadCodec = BincodeCodec<OffloadMessage, OffloadResponse, MAX_OFFLOAD_MESSAGE_BYTES>;

/// Why a request to another node got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeshSendError {
    /// The request was not delivered: safe to send again.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: PeerId, reason: String },
    /// The request may have been delivered, but its answer was lost.
    #[error("the answer from peer {peer} was lost: {reason}")]
    Lost { peer: PeerId, reason: String },
    #[error("no answer from peer {peer} within {timeout_ms} ms")]
    Timeout { peer: PeerId, timeout_ms: u64 },
    #[error("request to peer {peer} failed: {reason}")]
    Failed { peer: PeerId, reason: String },
    #[error("the mesh has stopped")]
    Stopped,
}

/// How a node's swarm is set up.
pub struct MeshConfig {
    pub keypair: Keypair,
    /// With a key, every connection first runs the private-network handshake
    /// (libp2p pnet): peers without the same key cannot connect.
    pub private_mesh_key: Option<libp2p::pnet::PreSharedKey>,
    pub listen: Multiaddr,
    /// Peers to dial at start and to redial, with backoff, while not connected.
    pub bootstrap: Vec<Multiaddr>,
    pub advert_ttl: Duration,
}

/// What `mesh_peers` shows of one connected peer.
#[derive(Debug, Clone)]
pub struct PeerSummary {
    pub peer_id: PeerId,
    pub addresses: Vec<Multiaddr>,
    pub rtt: Option<Duration>,
}

/// Counters of the mesh, for status and metrics.
#[derive(Debug, Default, Clone)]
pub struct MeshCounters {
    pub adverts_received: u64,
    pub adverts_rejected: u64,
    pub adverts_published: u64,
    pub inbound_refused_busy: u64,
    /// Links (one long-lived stream per peer) this node opened.
    pub links_opened: u64,
    /// Requests sent on a link rather than on a request-response stream.
    pub link_requests: u64,
    /// Requests peers sent this node on links.
    pub link_requests_served: u64,
    /// Offloaded calls answered "busy": [`MAX_OFFLOAD_QUEUED`] already
    /// waited for a slot, or no slot came free within the call's budget.
    pub offload_refused_busy: u64,
}

#[derive(Default)]
struct Shared {
    listen_addrs: Vec<Multiaddr>,
    peers: HashMap<PeerId, PeerSummary>,
    isolated: HashSet<PeerId>,
    counters: MeshCounters,
}

enum MeshCommand {
    Request {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: MeshRequest,
        reply: oneshot::Sender<Result<MeshResponse, MeshSendError>>,
    },
    Offload {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: OffloadMessage,
        reply: oneshot::Sender<Result<OffloadResponse, MeshSendError>>,
    },
    SetAdvert(Vec<u8>),
    /// Dials an address without a peer id, to learn whose it is.
    Discover {
        address: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, String>>,
    },
}

/// The rest of the node's door to the swarm task. Cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<MeshCommand>,
    shared: Arc<Mutex<Shared>>,
    adverts: Arc<Mutex<AdvertTable>>,
    offload_handler: Arc<OnceLock<Arc<dyn OffloadHandler>>>,
    /// [`MAX_OFFLOAD_SENT_IN_FLIGHT`] permits: one per offloaded call in flight.
    offload_sent: Arc<Semaphore>,
    links: Arc<Links>,
    /// Test switch: true once this node stopped serving links.
    refuse_links: Arc<tokio::sync::watch::Sender<bool>>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    rpc: request_response::Behaviour<BincodeCodec<MeshRequest, MeshResponse>>,
    offload: request_response::Behaviour<OffloadCodec>,
    links: libp2p_stream::Behaviour,
}

/// The slowest a request-response exchange may be before libp2p gives up on
/// it; callers use their own, shorter, deadlines.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest an offloaded call may be: the longest a plugin call may run,
/// and time to carry it; callers use the call's own deadline.
const OFFLOAD_TIMEOUT: Duration = Duration::from_millis(MAX_PLUGIN_WALL_CLOCK_MS + 10_000);
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
const REDIAL_TICK: Duration = Duration::from_millis(250);
const REDIAL_BACKOFF_MIN: Duration = Duration::from_millis(250);
const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(10);
const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(30);
const COMMAND_QUEUE: usize = 1024;

/// The peer id at the end of `address` (`.../p2p/<id>`), if any.
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn build_behaviour(keypair: &Keypair) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = keypair.public().to_peer_id();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(MAX_MESH_CONNECTIONS))
        .with_max_pending_incoming(Some(MAX_MESH_CONNECTIONS / 4))
        .with_max_pending_outgoing(Some(MAX_MESH_CONNECTIONS / 4))
        .with_max_established_per_peer(Some(4));
    let identify = identify::Behaviour::new(
        identify::Config::new("/zeromesh/1".into(), keypair.public())
            .with_agent_version(format!("zeromesh/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mut kad_config = kad::Config::new(StreamProtocol::new("/zeromesh/kad/1"));
    kad_config.set_query_timeout(Duration::from_secs(30));
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // On loopback kad cannot confirm an external address, so it would stay a
    // client; every zeromesh node answers kad queries.
    kad.set_mode(Some(kad::Mode::Server));
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .max_transmit_size(MAX_ADVERT_BYTES + 1024)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .build()?;
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(keypair.clone()), gossip_config)?;
    gossipsub.subscribe(&gossipsub::IdentTopic::new(ADVERT_TOPIC))?;
    let rpc = request_response::Behaviour::new(
        [(MESH_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(RPC_TIMEOUT)
            .with_max_concurrent_streams(MAX_MESH_STREAMS_PER_CONNECTION),
    );
    let offload = request_response::Behaviour::new(
        [(OFFLOAD_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(OFFLOAD_TIMEOUT)
            .with_max_concurrent_streams(MAX_OFFLOAD_STREAMS_PER_CONNECTION),
    );
    let ping = ping::Behaviour::new(ping::Config::new());
    let links = libp2p_stream::Behaviour::new();
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify,
        ping,
        kad,
        gossipsub,
        rpc,
        offload,
        links,
    })
}

struct Redial {
    address: Multiaddr,
    peer: PeerId,
    next_attempt: Instant,
    backoff: Duration,
}

struct MeshTask {
    swarm: Swarm<Behaviour>,
    handler: Arc<dyn InboundHandler>,
    shared: Arc<Mutex<Shared>>,
    adverts: Arc<Mutex<AdvertTable>>,
    pending: HashMap<OutboundRequestId, (PeerId, oneshot::Sender<Result<MeshResponse, MeshSendError>>)>,
    inbound_slots: Arc<Semaphore>,
    responses_tx: mpsc::Sender<(ResponseChannel<MeshResponse>, MeshResponse)>,
    redials: Vec<Redial>,
    advert: Option<Vec<u8>>,
    publish_soon: bool,
    /// Dials made to learn a peer id, by connection.
    discovering: HashMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    offload_handler: Arc<OnceLock<Arc<dyn OffloadHandler>>>,
    offload_pending: HashMap<OutboundRequestId, oneshot::Sender<Result<OffloadResponse, MeshSendError>>>,
    /// [`MAX_OFFLOAD_SERVED_IN_FLIGHT`] permits: one per call run for a peer.
    offload_slots: Arc<Semaphore>,
    /// [`MAX_OFFLOAD_QUEUED`] more than the slots: one per call running or
    /// waiting for a slot.
    offload_queue: Arc<Semaphore>,
    offload_responses_tx: mpsc::Sender<(ResponseChannel<OffloadResponse>, OffloadResponse)>,
}

/// The longest a request for tool definitions waits for a slot.
const DESCRIBE_SLOT_WAIT: Duration = Duration::from_secs(2);

/// Waits for one of the slots calls from peers run in: a call no longer
/// than its wall-clock budget, which the wait uses up (the call runs with
/// what is left); answered "busy" without running when no slot comes free.
async fn take_offload_slot(
    slots: &Arc<Semaphore>,
    mut request: OffloadMessage,
) -> Result<(tokio::sync::OwnedSemaphorePermit, OffloadMessage), OffloadResponse> {
    let budget = match &request {
        OffloadMessage::Call(call) => Duration::from_millis(call.wall_ms),
        OffloadMessage::Describe { .. } => DESCRIBE_SLOT_WAIT,
    };
    let started = Instant::now();
    let busy = || {
        OffloadResponse::NotRun(format!(
            "node was running {MAX_OFFLOAD_SERVED_IN_FLIGHT} calls for peers for the call's whole {} ms",
            budget.as_millis()
        ))
    };
    let Ok(Ok(slot)) = tokio::time::timeout(budget, slots.clone().acquire_owned()).await else {
        return Err(busy());
    };
    if let OffloadMessage::Call(call) = &mut request {
        let waited = started.elapsed().as_millis() as u64;
        if waited >= call.wall_ms {
            return Err(busy());
        }
        call.wall_ms -= waited;
    }
    Ok((slot, request))
}

/// TCP, then (with a pre-shared key) the private-network handshake, then
/// noise and yamux.
fn transport(
    keypair: &Keypair,
    private_mesh_key: Option<libp2p::pnet::PreSharedKey>,
) -> Result<
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use libp2p::core::upgrade::Version;
    use libp2p::Transport;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let maybe_private = match private_mesh_key {
        Some(key) => {
            either::Either::Left(tcp.and_then(move |socket, _| libp2p::pnet::PnetConfig::new(key).handshake(socket)))
        }
        None => either::Either::Right(tcp),
    };
    Ok(maybe_private
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(keypair)?)
        .multiplex(yamux::Config::default())
        .timeout(TRANSPORT_UPGRADE_TIMEOUT)
        .boxed())
}

/// How long a new connection may take to finish its handshakes.
const TRANSPORT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

impl MeshHandle {
    /// Builds the swarm, starts listening and spawns the task that owns it.
    pub async fn start(config: MeshConfig, handler: Arc<dyn InboundHandler>) -> anyhow::Result<MeshHandle> {
        let peer_id = config.keypair.public().to_peer_id();
        let private_mesh_key = config.private_mesh_key;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
            .with_tokio()
            .with_other_transport(|keypair| transport(keypair, private_mesh_key))?
            .with_dns()?
            .with_behaviour(build_behaviour)?
            .with_swarm_config(|swarm_config| swarm_config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build();
        swarm
            .listen_on(config.listen.clone())
            .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;

        let shared = Arc::new(Mutex::new(Shared::default()));
        let adverts = Arc::new(Mutex::new(AdvertTable::new(config.advert_ttl)));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (responses_tx, responses_rx) = mpsc::channel(MAX_MESH_REQUESTS_IN_FLIGHT);
        let (offload_responses_tx, offload_responses_rx) = mpsc::channel(MAX_OFFLOAD_SERVED_IN_FLIGHT);
        let offload_handler = Arc::new(OnceLock::new());
        let now = Instant::now();
        let redials: Vec<Redial> = config
            .bootstrap
            .iter()
            .filter_map(|address| {
                let peer = peer_of(address)?;
                (peer != peer_id).then(|| Redial {
                    address: address.clone(),
                    peer,
                    next_attempt: now,
                    backoff: REDIAL_BACKOFF_MIN,
                })
            })
            .collect();
        for redial in &redials {
            swarm.add_peer_address(redial.peer, redial.address.clone());
            swarm.behaviour_mut().kad.add_address(&redial.peer, redial.address.clone());
        }
        let inbound_slots = Arc::new(Semaphore::new(MAX_MESH_REQUESTS_IN_FLIGHT));
        let mut control = swarm.behaviour().links.new_control();
        let incoming =
            control.accept(LINK_PROTOCOL).map_err(|error| anyhow::anyhow!("cannot accept mesh links: {error}"))?;
        let (isolation, busy) = (shared.clone(), shared.clone());
        let links = Arc::new(Links::new(control.clone()));
        let (refuse_links, refused) = tokio::sync::watch::channel(false);
        let refuse_links = Arc::new(refuse_links);
        tokio::spawn(serve_links(
            incoming,
            LinkService {
                handler: handler.clone(),
                slots: inbound_slots.clone(),
                is_isolated: Box::new(move |peer| lock(&isolation).isolated.contains(peer)),
                refused_busy: Box::new(move || lock(&busy).counters.inbound_refused_busy += 1),
                counters: links.counters.clone(),
            },
            refused,
        ));
        let task = MeshTask {
            swarm,
            handler,
            shared: shared.clone(),
            adverts: adverts.clone(),
            pending: HashMap::new(),
            inbound_slots,
            responses_tx,
            redials,
            advert: None,
            publish_soon: false,
            discovering: HashMap::new(),
            offload_handler: offload_handler.clone(),
            offload_pending: HashMap::new(),
            offload_slots: Arc::new(Semaphore::new(MAX_OFFLOAD_SERVED_IN_FLIGHT)),
            offload_queue: Arc::new(Semaphore::new(MAX_OFFLOAD_SERVED_IN_FLIGHT + MAX_OFFLOAD_QUEUED)),
            offload_responses_tx,
        };
        tokio::spawn(task.run(commands_rx, responses_rx, offload_responses_rx));
        let offload_sent = Arc::new(Semaphore::new(MAX_OFFLOAD_SENT_IN_FLIGHT));
        let handle = MeshHandle {
            peer_id,
            commands: commands_tx,
            shared,
            adverts,
            offload_handler,
            offload_sent,
            links,
            refuse_links,
        };
        handle.wait_listening(Duration::from_secs(10)).await?;
        Ok(handle)
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn wait_listening(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while lock(&self.shared).listen_addrs.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!("the mesh did not start listening within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The addresses this node listens on, each ending in `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.shared)
            .listen_addrs
            .iter()
            .map(|address| address.clone().with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    /// Whose node answers at `address` (one without `/p2p/`, a DNS name
    /// say): dials it and returns the peer id the connection proved.
    pub async fn discover(&self, address: Multiaddr, timeout: Duration) -> Result<PeerId, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(MeshCommand::Discover { address: address.clone(), reply })
            .await
            .map_err(|_| "the mesh has stopped".to_owned())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(found)) => found,
            Ok(Err(_)) => Err("the mesh has stopped".to_owned()),
            Err(_) => Err(format!("no answer from {address} within {timeout:?}")),
        }
    }

    /// Sends `request` to `peer` (dialling one of `addresses` if needed) and
    /// waits at most `timeout` for its answer. Raft's messages, forwarded
    /// writes and read-index requests take the link to the peer when one is
    /// open (`link.rs`).
    pub async fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: MeshRequest,
        timeout: Duration,
    ) -> Result<MeshResponse, MeshSendError> {
        if request.rides_link() {
            let connected = lock(&self.shared).peers.contains_key(&peer);
            let link = self.links.link(peer, connected);
            if let Some((link, frame)) = link.and_then(|link| link.frame(&request).map(|frame| (link, frame))) {
                return self.guarded(peer, link.call(frame, timeout)).await;
            }
        }
        self.exchange(peer, timeout, |reply| MeshCommand::Request { peer, addresses, request, reply }).await
    }

    /// Has `peer` run an offloaded plugin call, waiting at most `timeout`,
    /// first for one of the [`MAX_OFFLOAD_SENT_IN_FLIGHT`] calls in flight
    /// to end when that many are.
    pub async fn offload(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: OffloadMessage,
        timeout: Duration,
    ) -> Result<OffloadResponse, MeshSendError> {
        let started = Instant::now();
        let Ok(Ok(_in_flight)) = tokio::time::timeout(timeout, self.offload_sent.acquire()).await else {
            return Err(MeshSendError::Unreachable {
                peer,
                reason: format!(
                    "{MAX_OFFLOAD_SENT_IN_FLIGHT} offloaded calls were in flight for the call's whole {} ms",
                    timeout.as_millis()
                ),
            });
        };
        let timeout = timeout.saturating_sub(started.elapsed());
        self.exchange(peer, timeout, |reply| MeshCommand::Offload { peer, addresses, request, reply }).await
    }

    /// Hands the swarm task the command `command` makes around a reply
    /// channel, and waits at most `timeout` for the answer from `peer`.
    async fn exchange<A>(
        &self,
        peer: PeerId,
        timeout: Duration,
        command: impl FnOnce(oneshot::Sender<Result<A, MeshSendError>>) -> MeshCommand,
    ) -> Result<A, MeshSendError> {
        self.guarded(peer, async {
            let (reply, answer) = oneshot::channel();
            self.commands.send(command(reply)).await.map_err(|_| MeshSendError::Stopped)?;
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(MeshSendError::Stopped),
                Err(_) => Err(MeshSendError::Timeout { peer, timeout_ms: timeout.as_millis() as u64 }),
            }
        })
        .await
    }

    /// Runs `exchange` with `peer` unless the test switch cuts traffic to it,
    /// before or while it runs.
    async fn guarded<A>(
        &self,
        peer: PeerId,
        exchange: impl std::future::Future<Output = Result<A, MeshSendError>>,
    ) -> Result<A, MeshSendError> {
        if self.is_isolated(&peer) {
            return Err(MeshSendError::Unreachable { peer, reason: "traffic to it is cut by the test switch".into() });
        }
        let response = exchange.await?;
        // A partition that began while the request was in flight loses the answer.
        if self.is_isolated(&peer) {
            return Err(MeshSendError::Lost { peer, reason: "traffic to it is cut by the test switch".into() });
        }
        Ok(response)
    }

    /// Who runs the plugin calls peers offload here; until it is set, they
    /// are answered "starting" without running.
    pub fn set_offload_handler(&self, handler: Arc<dyn OffloadHandler>) {
        let _ = self.offload_handler.set(handler);
    }

    /// Replaces the advert this node publishes and publishes it (now, or as
    /// soon as a peer subscribes to the topic). The caller republishes
    /// periodically with a higher sequence number.
    pub async fn set_advert(&self, signed_advert: Vec<u8>) {
        let _ = self.commands.send(MeshCommand::SetAdvert(signed_advert)).await;
    }

    /// The live adverts this node has received (its own included).
    pub fn adverts(&self) -> Vec<super::advert::KnownAdvert> {
        lock(&self.adverts).snapshot(Instant::now())
    }

    /// How long a received advert is kept: a node silent for longer has
    /// none in [`MeshHandle::adverts`].
    pub fn advert_ttl(&self) -> Duration {
        lock(&self.adverts).ttl()
    }

    pub fn connected_peers(&self) -> Vec<PeerSummary> {
        let mut peers: Vec<PeerSummary> = lock(&self.shared).peers.values().cloned().collect();
        peers.sort_by_key(|peer| peer.peer_id.to_string());
        peers
    }

    pub fn counters(&self) -> MeshCounters {
        let shared = lock(&self.shared);
        let mut counters = shared.counters.clone();
        counters.adverts_rejected = lock(&self.adverts).rejected;
        counters.links_opened = self.links.counters.opened.load(std::sync::atomic::Ordering::Relaxed);
        counters.link_requests = self.links.counters.requests.load(std::sync::atomic::Ordering::Relaxed);
        counters.link_requests_served = self.links.counters.served.load(std::sync::atomic::Ordering::Relaxed);
        counters
    }

    /// Test switch: drops all mesh traffic to and from `peers`.
    pub fn isolate(&self, peers: impl IntoIterator<Item = PeerId>) {
        lock(&self.shared).isolated.extend(peers);
    }

    /// Test switch: stops serving links for good, as a node that predates
    /// them (peers then send everything on the request-response protocol).
    pub fn refuse_links(&self) {
        self.refuse_links.send_replace(true);
    }

    /// Test switch: undoes every [`MeshHandle::isolate`].
    pub fn heal(&self) {
        lock(&self.shared).isolated.clear();
    }

    pub fn isolated(&self) -> Vec<PeerId> {
        lock(&self.shared).isolated.iter().copied().collect()
    }

    fn is_isolated(&self, peer: &PeerId) -> bool {
        lock(&self.shared).isolated.contains(peer)
    }
}

fn outbound_error(peer: PeerId, error: OutboundFailure) -> MeshSendError {
    match error {
        OutboundFailure::DialFailure => MeshSendError::Unreachable { peer, reason: "dial failed".into() },
        OutboundFailure::ConnectionClosed => MeshSendError::Lost { peer, reason: "connection closed".into() },
        OutboundFailure::Timeout => MeshSendError::Timeout { peer, timeout_ms: RPC_TIMEOUT.as_millis() as u64 },
        OutboundFailure::UnsupportedProtocols => {
            MeshSendError::Failed { peer, reason: "the peer does not speak the zeromesh protocol version".into() }
        }
        OutboundFailure::Io(error) => MeshSendError::Failed { peer, reason: error.to_string() },
    }
}

impl MeshTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<MeshCommand>,
        mut responses: mpsc::Receiver<(ResponseChannel<MeshResponse>, MeshResponse)>,
        mut offload_responses: mpsc::Receiver<(ResponseChannel<OffloadResponse>, OffloadResponse)>,
    ) {
        let mut redial_tick = tokio::time::interval(REDIAL_TICK);
        redial_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kad_tick = tokio::time::interval(KAD_BOOTSTRAP_INTERVAL);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((channel, response)) = responses.recv() => {
                    // The requester may have gone; nothing to do then.
                    let _ = self.swarm.behaviour_mut().rpc.send_response(channel, response);
                }
                Some((channel, response)) = offload_responses.recv() => {
                    let _ = self.swarm.behaviour_mut().offload.send_response(channel, response);
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                // An idle node with its bootstrap peers connected and its
                // advert out has nothing to do on this tick: not woken for it.
                _ = redial_tick.tick(), if self.publish_soon || self.has_peer_to_redial() => {
                    self.redial();
                    self.publish_if_due();
                }
                _ = kad_tick.tick() => {
                    if !lock(&self.shared).peers.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        tracing::debug!("mesh task stopped");
    }

    fn on_command(&mut self, command: MeshCommand) {
        match command {
            MeshCommand::Request { peer, addresses, request, reply } => {
                if self.pending.len() >= MAX_MESH_REQUESTS_IN_FLIGHT {
                    let _ = reply.send(Err(MeshSendError::Failed {
                        peer,
                        reason: format!("{MAX_MESH_REQUESTS_IN_FLIGHT} mesh requests are already in flight"),
                    }));
                    return;
                }
                for address in &addresses {
                    self.swarm.add_peer_address(peer, address.clone());
                }
                let id = self.swarm.behaviour_mut().rpc.send_request_with_addresses(&peer, request, addresses);
                self.pending.insert(id, (peer, reply));
            }
            MeshCommand::Offload { peer, addresses, request, reply } => {
                // Callers wait for a permit first (`MeshHandle::offload`); a
                // caller that gave up frees its permit while libp2p still
                // holds its request, so the bound is kept here too.
                if self.offload_pending.len() >= MAX_OFFLOAD_SENT_IN_FLIGHT {
                    let _ = reply.send(Err(MeshSendError::Unreachable {
                        peer,
                        reason: format!("{MAX_OFFLOAD_SENT_IN_FLIGHT} offloaded calls are already in flight"),
                    }));
                    return;
                }
                for address in &addresses {
                    self.swarm.add_peer_address(peer, address.clone());
                }
                let id = self.swarm.behaviour_mut().offload.send_request_with_addresses(&peer, request, addresses);
                self.offload_pending.insert(id, reply);
            }
            MeshCommand::Discover { address, reply } => {
                let dial = DialOpts::unknown_peer_id().address(address).build();
                let connection = dial.connection_id();
                match self.swarm.dial(dial) {
                    Ok(()) => {
                        self.discovering.insert(connection, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
            MeshCommand::SetAdvert(bytes) => {
                self.advert = Some(bytes);
                self.publish_soon = true;
                self.publish_if_due();
            }
        }
    }

    fn has_peer_to_redial(&self) -> bool {
        let shared = lock(&self.shared);
        // A reconnected peer's backoff is reset on the next tick.
        self.redials
            .iter()
            .any(|redial| !shared.peers.contains_key(&redial.peer) || redial.backoff != REDIAL_BACKOFF_MIN)
    }

    fn redial(&mut self) {
        let now = Instant::now();
        let connected: HashSet<PeerId> = lock(&self.shared).peers.keys().copied().collect();
        for redial in &mut self.redials {
            if connected.contains(&redial.peer) {
                redial.backoff = REDIAL_BACKOFF_MIN;
                continue;
            }
            if now < redial.next_attempt {
                continue;
            }
            tracing::debug!(address = %redial.address, "dialling bootstrap peer");
            if let Err(error) = self.swarm.dial(redial.address.clone()) {
                tracing::debug!(address = %redial.address, %error, "dial refused");
            }
            redial.next_attempt = now + redial.backoff;
            redial.backoff = (redial.backoff * 2).min(REDIAL_BACKOFF_MAX);
        }
    }

    fn publish_if_due(&mut self) {
        let Some(advert) = self.advert.clone() else { return };
        if !self.publish_soon {
            return;
        }
        // Our own advert goes into our own table too.
        if let Ok(own) = SignedAdvert::verify(&advert) {
            lock(&self.adverts).insert(*self.swarm.local_peer_id(), own, Instant::now());
        }
        match self.swarm.behaviour_mut().gossipsub.publish(gossipsub::IdentTopic::new(ADVERT_TOPIC), advert) {
            Ok(_) => {
                self.publish_soon = false;
                lock(&self.shared).counters.adverts_published += 1;
            }
            // No subscribed peer yet: try again on the next tick.
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(error) => tracing::debug!(%error, "advert not published"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "mesh listening");
                lock(&self.shared).listen_addrs.push(address);
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                if let Some(reply) = self.discovering.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                let mut shared = lock(&self.shared);
                let summary = shared.peers.entry(peer_id).or_insert_with(|| PeerSummary {
                    peer_id,
                    addresses: Vec::new(),
                    rtt: None,
                });
                let address = endpoint.get_remote_address().clone();
                if !summary.addresses.contains(&address) && summary.addresses.len() < MAX_ADVERT_ADDRESSES {
                    summary.addresses.push(address);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                lock(&self.shared).peers.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                if let Some(reply) = self.discovering.remove(&connection_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                for address in info.listen_addrs.into_iter().take(MAX_ADVERT_ADDRESSES) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, address.clone());
                    self.swarm.add_peer_address(peer_id, address);
                }
            }
            BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. }) => {
                if let Some(summary) = lock(&self.shared).peers.get_mut(&peer) {
                    summary.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { propagation_source, message, .. }) => {
                self.on_advert(propagation_source, &message.data);
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { .. }) => {
                // A peer just joined the topic: let it learn about us now.
                self.publish_soon = true;
                self.publish_if_due();
            }
            BehaviourEvent::Rpc(event) => self.on_rpc_event(event),
            BehaviourEvent::Offload(event) => self.on_offload_event(event),
            _ => {}
        }
    }

    fn on_advert(&mut self, source: PeerId, bytes: &[u8]) {
        if lock(&self.shared).isolated.contains(&source) {
            return;
        }
        match SignedAdvert::verify(bytes) {
            Ok(advert) => match advert.peer_id.parse::<PeerId>() {
                Ok(peer) => {
                    lock(&self.adverts).insert(peer, advert, Instant::now());
                    lock(&self.shared).counters.adverts_received += 1;
                }
                Err(_) => lock(&self.adverts).rejected += 1,
            },
            Err(error) => {
                tracing::warn!(%source, %error, "advert dropped");
                lock(&self.adverts).rejected += 1;
            }
        }
    }

    fn on_rpc_event(&mut self, event: request_response::Event<MeshRequest, MeshResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if lock(&self.shared).isolated.contains(&peer) {
                        // Dropping the channel drops the request: the sender sees a failure.
                        return;
                    }
                    let Ok(slot) = self.inbound_slots.clone().try_acquire_owned() else {
                        lock(&self.shared).counters.inbound_refused_busy += 1;
                        let busy = MeshResponse::Refused(MeshError::Unavailable(format!(
                            "node is handling {MAX_MESH_REQUESTS_IN_FLIGHT} mesh requests already; retry shortly"
                        )));
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, busy);
                        return;
                    };
                    let handler = self.handler.clone();
                    let responses = self.responses_tx.clone();
                    tokio::spawn(async move {
                        let response = handler.handle(peer, request).await;
                        drop(slot);
                        let _ = responses.send((channel, response)).await;
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply)) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(outbound_error(peer, error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound mesh request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_offload_event(&mut self, event: request_response::Event<OffloadMessage, OffloadResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if lock(&self.shared).isolated.contains(&peer) {
                        return;
                    }
                    let Ok(queued) = self.offload_queue.clone().try_acquire_owned() else {
                        lock(&self.shared).counters.offload_refused_busy += 1;
                        let busy = OffloadResponse::NotRun(format!(
                            "node is running {MAX_OFFLOAD_SERVED_IN_FLIGHT} calls for peers and {MAX_OFFLOAD_QUEUED} more wait"
                        ));
                        let _ = self.swarm.behaviour_mut().offload.send_response(channel, busy);
                        return;
                    };
                    let Some(handler) = self.offload_handler.get().cloned() else {
                        let starting = OffloadResponse::NotRun("node is starting".into());
                        let _ = self.swarm.behaviour_mut().offload.send_response(channel, starting);
                        return;
                    };
                    let (slots, shared) = (self.offload_slots.clone(), self.shared.clone());
                    let responses = self.offload_responses_tx.clone();
                    tokio::spawn(async move {
                        let response = match take_offload_slot(&slots, request).await {
                            Ok((_slot, request)) => handler.handle(peer, request).await,
                            Err(busy) => {
                                lock(&shared).counters.offload_refused_busy += 1;
                                busy
                            }
                        };
                        drop(queued);
                        let _ = responses.send((channel, response)).await;
                    });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.offload_pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(reply) = self.offload_pending.remove(&request_id) {
                    let _ = reply.send(Err(outbound_error(peer, error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound offload request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
