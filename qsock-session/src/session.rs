//! The paper's six calls (Table I): [`SessionSocket::new`] (session
//! socket), [`SessionSocket::bind`] (session bind, giving a
//! [`SessionListener`]), [`SessionSocket::connect`] (session connect),
//! [`Session::read`], [`Session::write`], [`Session::close`]; plus
//! [`Session::info`]. All block the calling thread; a session's own work
//! runs on a thread of its own.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd, FromRawFd, OwnedFd},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use qsock::PacketFlags;

use crate::{
    engine::{Engine, Handle, Out, Path, Role, Shared, SEND_LIMIT},
    handshake::{self, Answer, Hello},
    info::{Mode, SessionInfo},
    path::{PathEstimator, PathState},
    scoreboard, ErrorKind, Result, SessionConfig, SessionError,
};

/// How long a connect waits for the first path to join.
const FIRST_PATH_WAIT: Duration = Duration::from_secs(3);
/// How long an accepted connection has to show the protocol's prefix.
const PREFIX_WAIT: Duration = Duration::from_secs(1);

/// A session endpoint not yet bound or connected (`session_socket`).
pub struct SessionSocket {
    config: SessionConfig,
}

impl SessionSocket {
    /// A session endpoint with `config`. Errors: [`ErrorKind::InvalidConfig`].
    pub fn new(config: SessionConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// Listens on `addr` (`session_bind`); paths join on every address of
    /// the host (or only `addr`'s when it is a specific one).
    /// Errors: [`ErrorKind::Io`].
    pub fn bind(self, addr: SocketAddr) -> Result<SessionListener> {
        let tcp = TcpListener::bind(addr).map_err(|e| SessionError::io(&format!("listen on {addr}"), e))?;
        Ok(SessionListener { config: self.config, tcp })
    }

    /// Connects a session to `remote` (`session_connect`): the handshake on
    /// a control connection, then a path from each local interface to each
    /// of the peer's endpoints, each socket attached through qsockd on its
    /// interface. A peer that does not answer the handshake within
    /// [`handshake::answer_wait`] is a plain peer: the session is then one
    /// plain TCP connection ([`Mode::Plain`]).
    /// Errors: [`ErrorKind::Io`] (no connection), [`ErrorKind::Protocol`]
    /// (the peer refused, or no path could join), [`ErrorKind::InvalidConfig`]
    /// (no local interface for the peer's address family).
    pub fn connect(self, remote: SocketAddr) -> Result<Session> {
        let config = self.config;
        let mut control = TcpStream::connect_timeout(&remote, Duration::from_secs(3)).map_err(|e| SessionError::io(&format!("connect to {remote}"), e))?;
        let _ = control.set_nodelay(true);
        let locals = local_candidates(&config, remote.ip())?;
        let exchange = if config.encrypt && !config.bypass { Some(crate::crypto::Exchange::new()?) } else { None };
        let hello = Hello {
            semantics: config.semantics,
            objectives: config.objectives.clone(),
            addresses: locals.iter().map(|(_, ip)| *ip).collect(),
            transports: vec![if config.bypass { "tcp" } else { "udp" }.into()],
            max_message_bytes: config.max_message_bytes,
            key: exchange.as_ref().map(|e| hex::encode(e.public)),
        };
        handshake::write_frame(&mut control, &hello)?;
        let wait = handshake::answer_wait(handshake::tcp_rtt(&control));
        control.set_read_timeout(Some(wait)).map_err(|e| SessionError::io("SO_RCVTIMEO", e))?;
        let answer = match handshake::read_frame::<Answer>(&mut control) {
            Ok(a) => a,
            Err(e) if matches!(e.kind, ErrorKind::TimedOut | ErrorKind::Protocol) => {
                // The peer does not speak the protocol: a fresh plain connection (the hello went into the old one).
                log::info!("session to {remote}: {} within {wait:?}: a plain connection", e.message);
                let plain = TcpStream::connect_timeout(&remote, Duration::from_secs(3)).map_err(|e| SessionError::io(&format!("connect to {remote}"), e))?;
                return Ok(Session::stream(plain, &config, Mode::Plain { reason: format!("{} (waited {wait:?})", e.message) }));
            }
            Err(e) => return Err(e),
        };
        control.set_read_timeout(None).map_err(|e| SessionError::io("SO_RCVTIMEO", e))?;
        let (conn, endpoints, mut secret, transport, key) = match answer {
            Answer::Welcome { conn, endpoints, secret, transport, key } => (conn, endpoints, handshake::secret_from_hex(&secret)?, transport, key),
            Answer::Refused { reason } => return Err(SessionError::new(ErrorKind::Protocol, format!("the peer refused the session: {reason}"))),
        };
        if transport == "tcp" {
            return Ok(Session::stream(control, &config, Mode::Bypass));
        }
        let sealer = match (&exchange, key) {
            (Some(e), Some(k)) => {
                let (sealer, join) = e.keys(&k, &secret, true)?;
                secret = join;
                Some(sealer)
            }
            (Some(_), None) => return Err(SessionError::new(ErrorKind::Protocol, "encryption asked, and the peer answered without a key")),
            (None, _) => None,
        };
        let client = qsock_client(&config);
        let mut sockets = Vec::new();
        let mut paths = Vec::new();
        for (name, ip) in &locals {
            for ep in endpoints.iter().filter(|e| e.is_ipv4() == ip.is_ipv4()) {
                let sock = match UdpSocket::bind((*ip, 0)).and_then(|s| s.connect(ep).map(|_| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        log::info!("session {conn:08x}: no path from {name} ({ip}) to {ep}: {e}");
                        continue;
                    }
                };
                let local = sock.local_addr().map_err(|e| SessionError::io("getsockname", e))?;
                let (rtt, rate) = scoreboard::recall(ip, &ep.ip()).unwrap_or_else(|| interface_estimate(client.as_ref(), name));
                let id = paths.len() as u8;
                let mut p = Path::new(id, sockets.len(), local, *ep, Some(name.clone()), PathEstimator::new(rtt, rate), false);
                p.join_nonce = handshake::random_u64()?;
                if let Some(c) = &client {
                    match c.attach(sock.as_fd(), &qsock::QosParams::on(name.clone(), config.scheduler_on(name))) {
                        Ok(_) => p.attached = true,
                        Err(e) => log::info!("session {conn:08x}: path {id} on {name} stays unmanaged: {}", e.message),
                    }
                }
                sockets.push(Arc::new(sock));
                paths.push(p);
            }
        }
        if paths.is_empty() {
            return Err(SessionError::new(ErrorKind::Protocol, format!("no path could be made from {:?} to the peer's {endpoints:?}", locals)));
        }
        let keep: Vec<PathSocket> = paths.iter().filter(|p| p.attached).map(|p| PathSocket { id: p.id, sock: sockets[p.sock].clone() }).collect();
        let mut session = Session::striped(conn, (secret, sealer), Role::Connector, sockets, paths, &config, control)?;
        if let Inner::Striped { path_sockets, client: c, .. } = &mut session.inner {
            *path_sockets = keep;
            *c = client;
        }
        session.wait_first_path()?;
        Ok(session)
    }
}

/// The qsockd client the config names, if qsockd answers.
fn qsock_client(config: &SessionConfig) -> Option<qsock::Client> {
    let c = match &config.daemon {
        Some(p) => qsock::Client::connect(p),
        None => qsock::Client::connect_default(),
    };
    c.ok().filter(|c| c.ping().is_ok())
}

/// First figures of a path on interface `name` from qsockd's measurements
/// (TCP RTT there, nominal upstream rate): (µs, bit/s), zeros if unknown.
fn interface_estimate(client: Option<&qsock::Client>, name: &str) -> (u64, u64) {
    let Some(i) = client.and_then(|c| c.interfaces().ok()).and_then(|v| v.into_iter().find(|i| i.name == name)) else { return (0, 0) };
    (i.srtt_us.unwrap_or(0), i.nominal_up_bps)
}

/// The local (interface, address) pairs paths start from: the config's
/// interfaces, else qsockd's (up, with an address), else every interface
/// with an address; only `peer`'s family, and loopback only towards loopback.
fn local_candidates(config: &SessionConfig, peer: IpAddr) -> Result<Vec<(String, IpAddr)>> {
    let all = qsock::subflows::interface_addresses();
    let family = |ip: &IpAddr| ip.is_ipv4() == peer.is_ipv4() && ip.is_loopback() == peer.is_loopback() && !qsock::subflows::is_link_local(*ip);
    let names: Vec<String> = if !config.interfaces.is_empty() {
        config.interfaces.clone()
    } else if let Some(v) = qsock_client(config).and_then(|c| c.interfaces().ok()).filter(|v| v.iter().any(|i| i.up)) {
        v.into_iter().filter(|i| i.up).map(|i| i.name).collect()
    } else {
        let mut n: Vec<String> = all.iter().map(|(n, _)| n.clone()).collect();
        n.dedup();
        n
    };
    let out: Vec<(String, IpAddr)> = all.into_iter().filter(|(n, ip)| names.contains(n) && family(ip)).collect();
    if out.is_empty() {
        return Err(SessionError::new(ErrorKind::InvalidConfig, format!("no interface of {names:?} has an address of the peer's family ({peer})")));
    }
    Ok(out)
}

/// A bound session endpoint that accepts sessions.
pub struct SessionListener {
    config: SessionConfig,
    tcp: TcpListener,
}

impl SessionListener {
    /// Its control address (TCP). Errors: [`ErrorKind::Io`] (`getsockname`).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.tcp.local_addr().map_err(|e| SessionError::io("getsockname", e))
    }

    /// Accepts the next session. A client whose first bytes are not the
    /// protocol's (or who sends nothing within a second) gets a plain
    /// session ([`Mode::Plain`]); one that speaks it wrongly gets an
    /// error here, and the listener goes on serving.
    /// Errors: [`ErrorKind::Protocol`] (a malformed or refused hello),
    /// [`ErrorKind::Io`].
    pub fn accept(&self) -> Result<Session> {
        let (mut control, peer) = loop {
            match self.tcp.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SessionError::io("accept", e)),
            }
        };
        let _ = control.set_nodelay(true);
        if !handshake::peer_speaks_protocol(&control, PREFIX_WAIT) {
            let _ = control.set_read_timeout(None);
            return Ok(Session::stream(control, &self.config, Mode::Plain { reason: format!("{peer} does not speak qsock-session") }));
        }
        control.set_read_timeout(Some(PREFIX_WAIT)).map_err(|e| SessionError::io("SO_RCVTIMEO", e))?;
        let hello: Hello = match handshake::read_frame(&mut control) {
            Ok(h) => h,
            Err(e) => {
                // Say why (an unknown semantics or objective, a malformed frame) before hanging up.
                let _ = handshake::write_frame(&mut control, &Answer::Refused { reason: e.message.clone() });
                return Err(SessionError::new(ErrorKind::Protocol, format!("from {peer}: {}", e.message)));
            }
        };
        control.set_read_timeout(None).map_err(|e| SessionError::io("SO_RCVTIMEO", e))?;
        let refuse = |control: &mut TcpStream, reason: String| {
            let _ = handshake::write_frame(control, &Answer::Refused { reason: reason.clone() });
            Err(SessionError::new(ErrorKind::Protocol, format!("refused {peer}: {reason}")))
        };
        if hello.semantics != self.config.semantics {
            return refuse(&mut control, format!("semantics {} asked, this endpoint serves {}", hello.semantics.name(), self.config.semantics.name()));
        }
        if hello.max_message_bytes > self.config.max_message_bytes {
            return refuse(&mut control, format!("messages of up to {} bytes asked, at most {}", hello.max_message_bytes, self.config.max_message_bytes));
        }
        let local = control.local_addr().map_err(|e| SessionError::io("getsockname", e))?;
        let own: Vec<IpAddr> = if self.tcp.local_addr().is_ok_and(|a| !a.ip().is_unspecified()) {
            vec![local.ip()]
        } else {
            let mut v: Vec<IpAddr> = qsock::subflows::interface_addresses()
                .into_iter()
                .map(|(_, ip)| ip)
                .filter(|ip| ip.is_ipv4() == local.ip().is_ipv4() && ip.is_loopback() == local.ip().is_loopback() && !qsock::subflows::is_link_local(*ip))
                .collect();
            v.dedup();
            v
        };
        let single_homed = own.len() <= 1 && hello.addresses.len() <= 1;
        let tcp = hello.transports.iter().any(|t| t == "tcp") || (single_homed && self.config.semantics.lossless());
        if !tcp && !hello.transports.iter().any(|t| t == "udp") {
            return refuse(&mut control, format!("no transport in common (offered {:?}; udp or tcp)", hello.transports));
        }
        let conn = handshake::random_u64()? as u32;
        let salt = handshake::new_secret()?;
        // Encryption when the hello asks: keys from both X25519 halves, a join secret of their own.
        let (exchange, sealer, secret) = match &hello.key {
            Some(k) if !tcp => {
                let e = crate::crypto::Exchange::new()?;
                let (sealer, join) = match e.keys(k, &salt, false) {
                    Ok(x) => x,
                    Err(err) => return refuse(&mut control, err.message),
                };
                (Some(e), Some(sealer), join)
            }
            _ => (None, None, salt),
        };
        let mut sockets = Vec::new();
        if !tcp {
            for ip in &own {
                sockets.push(Arc::new(UdpSocket::bind((*ip, 0)).map_err(|e| SessionError::io(&format!("bind a path endpoint on {ip}"), e))?));
            }
        }
        let endpoints: Vec<SocketAddr> = sockets.iter().filter_map(|s| s.local_addr().ok()).collect();
        let transport = if tcp { "tcp" } else { "udp" };
        let key = exchange.map(|e| hex::encode(e.public));
        handshake::write_frame(&mut control, &Answer::Welcome { conn, endpoints, secret: handshake::secret_to_hex(&salt), transport: transport.into(), key })?;
        if tcp {
            return Ok(Session::stream(control, &self.config, Mode::Bypass));
        }
        let mut config = self.config.clone();
        config.objectives = hello.objectives;
        Session::striped(conn, (secret, sealer), Role::Acceptor, sockets, Vec::new(), &config, control)
    }
}

/// A path socket the application side keeps, to ask qsockd about it.
struct PathSocket {
    id: u8,
    sock: Arc<UdpSocket>,
}

enum Inner {
    Striped {
        handle: Arc<Handle>,
        thread: Option<std::thread::JoinHandle<()>>,
        max_message_bytes: usize,
        path_sockets: Vec<PathSocket>,
        client: Option<qsock::Client>,
    },
    Stream {
        writer: Mutex<TcpStream>,
        reader: Mutex<TcpStream>,
        framed: bool,
        info: Mutex<SessionInfo>,
        max_message_bytes: usize,
    },
}

/// An established session: one pipe over its paths.
pub struct Session {
    inner: Inner,
}

impl Session {
    /// `keys`: the join secret and, when encrypted, the datagrams' sealer.
    fn striped(
        conn: u32,
        keys: (handshake::Secret, Option<crate::crypto::Sealer>),
        role: Role,
        sockets: Vec<Arc<UdpSocket>>,
        paths: Vec<Path>,
        config: &SessionConfig,
        control: TcpStream,
    ) -> Result<Self> {
        // SAFETY: eventfd(2), checked and owned at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(SessionError::io("eventfd", std::io::Error::last_os_error()));
        }
        let kind = config.scheduler.unwrap_or_else(|| crate::scheduler_for(config.semantics, &config.objectives));
        let shared = Shared {
            send: Default::default(),
            send_bytes: 0,
            owed_bytes: 0,
            recv: Default::default(),
            recv_bytes: 0,
            next_seq: 0,
            closing: false,
            peer_done: false,
            close_acked: false,
            stopped: None,
            info: SessionInfo::new(conn, config.semantics, kind, Mode::Striped),
        };
        let handle =
            Arc::new(Handle { shared: Mutex::new(shared), readable: Condvar::new(), writable: Condvar::new(), wake: unsafe { OwnedFd::from_raw_fd(fd) } });
        let encrypted = keys.1.is_some();
        let max_message_bytes =
            if encrypted { config.max_message_bytes.min(crate::MAX_MESSAGE_BYTES - crate::crypto::OVERHEAD) } else { config.max_message_bytes };
        handle.shared.lock().expect("session state poisoned").info.encrypted = encrypted;
        let engine = Engine::new(handle.clone(), conn, keys, role, sockets, paths, config, Some(control));
        let thread = std::thread::Builder::new()
            .name(format!("qsock-session-{conn:08x}"))
            .spawn(move || engine.run())
            .map_err(|e| SessionError::io("start the session thread", e))?;
        Ok(Self { inner: Inner::Striped { handle, thread: Some(thread), max_message_bytes, path_sockets: Vec::new(), client: None } })
    }

    fn stream(s: TcpStream, config: &SessionConfig, mode: Mode) -> Self {
        let framed = mode == Mode::Bypass;
        let reader = s.try_clone().expect("dup a TCP socket");
        let info = SessionInfo::new(0, config.semantics, config.scheduler.unwrap_or_else(|| crate::scheduler_for(config.semantics, &config.objectives)), mode);
        Self {
            inner: Inner::Stream {
                writer: Mutex::new(s),
                reader: Mutex::new(reader),
                framed,
                info: Mutex::new(info),
                max_message_bytes: config.max_message_bytes,
            },
        }
    }

    fn wait_first_path(&self) -> Result<()> {
        let Inner::Striped { handle, .. } = &self.inner else { return Ok(()) };
        let until = Instant::now() + FIRST_PATH_WAIT;
        let mut sh = handle.shared.lock().expect("session state poisoned");
        loop {
            if sh.info.paths.iter().any(|p| p.state == PathState::Active) {
                return Ok(());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SessionError::new(
                    ErrorKind::Protocol,
                    format!("no path joined within {FIRST_PATH_WAIT:?} (the peer refused every join, or no path reaches it)"),
                ));
            }
            sh = handle.writable.wait_timeout(sh, left.min(Duration::from_millis(10))).expect("session state poisoned").0;
        }
    }

    /// Writes one message with its qsock flags (deadline, drop priority or
    /// non-droppable, frame marks), which go with it onto the path that
    /// carries it. Blocks while the session owes more than 4 MiB.
    /// Errors: [`ErrorKind::TooLarge`] (above the session's
    /// `max_message_bytes`), [`ErrorKind::Closed`], [`ErrorKind::Io`].
    pub fn write(&self, msg: &[u8], flags: &PacketFlags) -> Result<()> {
        let max = match &self.inner {
            Inner::Striped { max_message_bytes, .. } | Inner::Stream { max_message_bytes, .. } => *max_message_bytes,
        };
        if msg.len() > max {
            return Err(SessionError::new(ErrorKind::TooLarge, format!("a message of {} bytes (this session carries at most {max})", msg.len())));
        }
        match &self.inner {
            Inner::Stream { writer, framed, info, .. } => {
                let mut w = writer.lock().expect("session stream poisoned");
                let r = if *framed { w.write_all(&(msg.len() as u32).to_be_bytes()).and_then(|_| w.write_all(msg)) } else { w.write_all(msg) };
                r.map_err(|e| SessionError::new(ErrorKind::Closed, format!("the connection failed: {e}")))?;
                info.lock().expect("session info poisoned").written += 1;
                Ok(())
            }
            Inner::Striped { handle, .. } => {
                let mut sh = handle.shared.lock().expect("session state poisoned");
                loop {
                    if let Some(e) = &sh.stopped {
                        return Err(e.clone().unwrap_or_else(|| SessionError::new(ErrorKind::Closed, "the session is closed")));
                    }
                    if sh.closing {
                        return Err(SessionError::new(ErrorKind::Closed, "the session is closing"));
                    }
                    if sh.owed_bytes < SEND_LIMIT {
                        break;
                    }
                    sh = handle.writable.wait_timeout(sh, Duration::from_millis(50)).expect("session state poisoned").0;
                }
                let seq = sh.next_seq;
                sh.next_seq += 1;
                sh.send_bytes += msg.len();
                sh.owed_bytes += msg.len();
                sh.info.written += 1;
                sh.send.push_back(Out { seq, payload: msg.to_vec(), flags: *flags });
                drop(sh);
                handle.wake();
                Ok(())
            }
        }
    }

    /// The next message (a plain connection: the next bytes that arrived);
    /// `None` once the peer closed and everything was read. Blocks.
    /// Errors: [`ErrorKind::Closed`] (the session broke), [`ErrorKind::Io`].
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        self.read_until(None)
    }

    /// [`Session::read`], giving up after `wait`: [`ErrorKind::TimedOut`].
    pub fn read_timeout(&self, wait: Duration) -> Result<Option<Vec<u8>>> {
        self.read_until(Some(Instant::now() + wait))
    }

    fn read_until(&self, until: Option<Instant>) -> Result<Option<Vec<u8>>> {
        match &self.inner {
            Inner::Stream { reader, framed, .. } => {
                let mut r = reader.lock().expect("session stream poisoned");
                let timeout = until.map(|u| u.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
                r.set_read_timeout(timeout).map_err(|e| SessionError::io("SO_RCVTIMEO", e))?;
                read_stream(&mut r, *framed)
            }
            Inner::Striped { handle, .. } => {
                let mut sh = handle.shared.lock().expect("session state poisoned");
                loop {
                    if let Some(m) = sh.recv.pop_front() {
                        sh.recv_bytes -= m.len();
                        return Ok(Some(m));
                    }
                    if let Some(Some(e)) = &sh.stopped {
                        return Err(e.clone());
                    }
                    if sh.peer_done {
                        return Ok(None);
                    }
                    let left = match until {
                        Some(u) => u.saturating_duration_since(Instant::now()),
                        None => Duration::from_millis(100),
                    };
                    if left.is_zero() {
                        return Err(SessionError::new(ErrorKind::TimedOut, "no message within the wait"));
                    }
                    sh = handle.readable.wait_timeout(sh, left.min(Duration::from_millis(100))).expect("session state poisoned").0;
                }
            }
        }
    }

    /// qsockd's `qinfo` of each path socket it manages, by path id: the
    /// class, rate, drops and queuing delay each interface gave the
    /// session's messages. Empty when no path is managed (no qsockd, or the
    /// accepting side).
    pub fn path_qinfo(&self) -> Vec<(u8, qsock::Result<qsock::QInfo>)> {
        let Inner::Striped { path_sockets, client: Some(c), .. } = &self.inner else { return Vec::new() };
        path_sockets.iter().map(|p| (p.id, c.info(p.sock.as_fd()))).collect()
    }

    /// The session's paths and counters.
    pub fn info(&self) -> SessionInfo {
        match &self.inner {
            Inner::Stream { info, .. } => info.lock().expect("session info poisoned").clone(),
            Inner::Striped { handle, .. } => handle.shared.lock().expect("session state poisoned").info.clone(),
        }
    }

    /// Ends the session (`session_close`): what was written is still sent
    /// (a lossless session waits until the peer has it all, giving up once
    /// nothing was acknowledged for 5 s),
    /// the peer is told, the paths and their qsockd classes go. Returns the
    /// final figures. Errors: [`ErrorKind::Closed`] when messages were
    /// still unacknowledged and none had been for 5 s.
    pub fn close(mut self) -> Result<SessionInfo> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<SessionInfo> {
        match &mut self.inner {
            Inner::Stream { writer, info, .. } => {
                let _ = writer.get_mut().expect("session stream poisoned").shutdown(std::net::Shutdown::Both);
                Ok(info.get_mut().expect("session info poisoned").clone())
            }
            Inner::Striped { handle, thread, .. } => {
                handle.shared.lock().expect("session state poisoned").closing = true;
                handle.wake();
                // The engine gives up once nothing was acknowledged for its linger.
                let mut sh = handle.shared.lock().expect("session state poisoned");
                while sh.stopped.is_none() && (sh.owed_bytes > 0 || !sh.send.is_empty()) {
                    sh = handle.writable.wait_timeout(sh, Duration::from_millis(20)).expect("session state poisoned").0;
                }
                // Then until the peer has our Close (bounded): a process that exits
                // at once would otherwise take the engine, and the Close, with it.
                let give_up = Instant::now() + crate::engine::LINGER;
                while sh.stopped.is_none() && !sh.close_acked && sh.owed_bytes == 0 && Instant::now() < give_up {
                    sh = handle.writable.wait_timeout(sh, Duration::from_millis(20)).expect("session state poisoned").0;
                }
                let owed = sh.owed_bytes;
                let info = sh.info.clone();
                let err = sh.stopped.clone().flatten();
                drop(sh);
                // Detached: the engine goes on until the peer's Close (or its linger).
                thread.take();
                match err {
                    Some(e) if owed > 0 => Err(e),
                    _ if owed > 0 => Err(SessionError::new(ErrorKind::Closed, format!("{owed} bytes still unacknowledged at close"))),
                    _ => Ok(info),
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Inner::Striped { handle, .. } = &self.inner {
            handle.shared.lock().expect("session state poisoned").closing = true;
            handle.wake();
        }
    }
}

fn read_stream(r: &mut TcpStream, framed: bool) -> Result<Option<Vec<u8>>> {
    let map = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SessionError::new(ErrorKind::TimedOut, "no message within the wait"),
        _ => SessionError::new(ErrorKind::Closed, format!("the connection failed: {e}")),
    };
    if framed {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(map(e)),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > crate::config::MAX_MESSAGE_BYTES {
            return Err(SessionError::new(ErrorKind::Protocol, format!("the peer framed a message of {n} bytes")));
        }
        let mut m = vec![0u8; n];
        r.read_exact(&mut m).map_err(map)?;
        return Ok(Some(m));
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map(e)),
        }
    }
}
