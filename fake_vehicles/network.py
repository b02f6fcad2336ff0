"""paho-mqtt connections driven by one selector in the fleet's own thread: no thread per connection.

paho's "external loop" API is used as documented: `loop_read` when a socket is readable,
`loop_write` when it has queued packets, `loop_misc` once a second. Publishing only queues a
packet (a `on_socket_register_write` callback is set, so paho never writes inline); `flush`
writes each connection's queue in one go. That is the fleet's batching, and why one process
can publish nearly as fast as a bare paho loop while running thousands of cars.

Over TLS (mqtts:// URLs) the handshake runs in the same selector (see `fake_vehicles.tls`),
and after each read the SSL socket's `pending()` bytes are read too: decrypted data waiting
inside the SSL object makes no file descriptor readable, so select() alone would leave it there.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fake_vehicles.tls import HANDSHAKE_TIMEOUT_S, LoopTlsSocket, TlsContexts, permanent_failure
from mqttlink import Backoff, BrokerUrl, BrokerUrlError, client_id_of
from protocol.topics import Delivery

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes, bool], None]  # topic, payload, retained (sent on subscribing)
MAX_UNACKED = 5_000
MAX_PENDING_READS = 10_000  # packets read from one SSL socket's buffer per wake-up


class Will(NamedTuple):
    """A connection's Last Will: what the broker publishes for it if it is lost without a goodbye."""

    topic: str
    payload: bytes
    delivery: Delivery


class Link:
    """One MQTT 3.1.1 connection: a Last Will, subscriptions renewed on every connect, reconnection.

    `name` says whom the connection speaks for (a car id, the gateway name); its client id is
    `name:` and random bits, owned by the URL's user (or by `name` when anonymous), so that no
    other process can guess it, and a second fleet with the same seed does not kick this one off.
    `on_connected` is called once the broker has acknowledged every subscription, in order: any
    retained message on an earlier subscription has been delivered by then.
    """

    def __init__(
        self, net: Net, url: BrokerUrl, name: str, *, will: Will | None = None,
        subscriptions: tuple[str, ...] = (), on_message: MessageCallback | None = None,
        on_connected: Callable[[Link], None] | None = None, keepalive: int = 30,
    ) -> None:
        self.net, self.url, self.name = net, url, name
        self.client_id = client_id_of(url, name)
        self.subscriptions, self.on_connected = subscriptions, on_connected
        self.connected = False
        self.ready = False  # connected, and every subscription acknowledged
        self._unacked_subscriptions: set[int] = set()
        self.unacked: deque[mqtt.MQTTMessageInfo] = deque()
        self.connects = 0  # successful connections so far; above one means a reconnect
        self.hello = ""  # the reason a car gives when its connection comes up
        self.refusal: str | None = None
        self.wanted = True  # False after `drop` or `close`: do not reconnect
        self.backoff = Backoff(initial_s=0.5, max_s=15.0)
        self.retry_at = 0.0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                        clean_session=True)
        if url.username:
            c.username_pw_set(url.username, url.password)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.delivery.qos, retain=will.delivery.retain)
        # No inflight window: every QoS 1 packet goes straight to the write queue, where
        # `Net.backlogged` sees it; unacknowledged ones are bounded by MAX_UNACKED below (and
        # must stay well under 65,535, or message ids would collide).
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(MAX_UNACKED * 2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        if on_message is not None:
            c.on_message = lambda _c, _u, msg: on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
        self.client = c
        self.keepalive = keepalive
        self.tls_error: str | None = None  # a CA or certificate file that cannot be used
        self.tls_failure: str | None = None  # why the last TLS connection failed, if it did
        self.tls_refusal: str | None = None  # a certificate problem that stopped this link for good
        self.tls_closed = False  # the broker ended a TLS connection before its CONNACK
        self.handshake_until = 0.0  # while a TLS handshake runs: when to give up on it
        if url.tls:
            try:
                c.tls_set_context(net.tls.for_url(url))
            except BrokerUrlError as exc:
                self.tls_error = str(exc)

    def start(self) -> None:
        """Open the TCP connection and send CONNECT; raises OSError if the broker cannot be reached."""
        if self.tls_error is not None:
            self.refusal, self.wanted = self.tls_error, False
            raise OSError(self.tls_error)
        self.wanted = True
        self.client.connect(self.url.host, self.url.port, self.keepalive)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Queue one message; QoS 1 messages are remembered until the broker acknowledges them."""
        info = self.client.publish(topic, payload, qos, retain)
        if qos:
            self.unacked.append(info)
            self.net.awaiting.add(self)
        return info

    def prune_acked(self) -> int:
        """Forget acknowledged messages (acknowledgements arrive in order); return how many are left."""
        unacked = self.unacked
        while unacked and settled(unacked[0]):
            unacked.popleft()
        return len(unacked)

    def drop(self) -> None:
        """Vanish: close the socket without DISCONNECT, so the broker publishes the Last Will."""
        self.wanted = False
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # paho sees the loss on its next read

    def close(self) -> None:
        """Leave cleanly (DISCONNECT: no Last Will), also from a connection still waiting for its CONNACK."""
        self.wanted = False
        if self.client.socket() is not None:
            self.client.disconnect()

    # paho callbacks ------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refusal = str(reason)
            self.wanted = False
            log.warning("%s: the broker refused the login of %r: %s", self.name, self.url.username or "anonymous",
                        reason)
            return
        self.connected, self.refusal = True, None
        self.connects += 1
        self.backoff.reset()
        mids = (client.subscribe(topic, qos=1)[1] for topic in self.subscriptions)
        self._unacked_subscriptions = {mid for mid in mids if mid is not None}
        if not self._unacked_subscriptions:
            self._ready()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, _codes: Any, _p: Any) -> None:
        pending = self._unacked_subscriptions
        if mid in pending:
            pending.discard(mid)
            if not pending and self.connected:
                self._ready()

    def _ready(self) -> None:
        self.ready = True
        if self.on_connected is not None:
            self.on_connected(self)

    def retry_later(self, reason: object) -> None:
        """The connection is down (or could not be opened): try again after a backoff delay."""
        self._on_disconnect(self.client, None, None, reason, None)

    def step_handshake(self) -> None:
        """Carry a TLS handshake on when its socket is ready; once done, send the CONNECT that waits."""
        sock = self.client.socket()
        if not isinstance(sock, LoopTlsSocket):
            self.net.handshaking.discard(self)
            return
        try:
            done = sock.step_handshake()
        except OSError:
            self.fail_handshake(sock)
            return
        events = selectors.EVENT_READ if done is not None else selectors.EVENT_READ | selectors.EVENT_WRITE
        if self.net.selector.get_key(sock).events != events:
            self.net.selector.modify(sock, events, self)
        if done:
            self.net.handshaking.discard(self)
            self.client.loop_write()

    def fail_handshake(self, sock: LoopTlsSocket, reason: str | None = None) -> None:
        """End a TLS connection whose handshake failed (or took too long): paho sees it lost and closes it."""
        if reason is not None:
            sock.failure = reason
        self.net.handshaking.discard(self)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_read()  # reads the end of the stream: paho closes the socket, calls on_disconnect

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        was = self.connected
        self.connected = self.ready = False
        problem = permanent_failure(self.tls_failure)
        self.tls_failure = None
        self.tls_closed = self.url.tls and not was
        if problem is not None and self.wanted:  # a certificate problem: as final as a refused login
            self.tls_refusal, self.refusal, self.wanted = problem, f"TLS failed: {problem}", False
            # news if it worked before; at start-up whoever started the link reports it (one line)
            log.log(logging.WARNING if self.connects else logging.INFO, "%s: %s", self.name, self.refusal)
        if self.wanted:
            delay = self.backoff.next_delay()
            self.retry_at = time.monotonic() + delay
            self.net.lost.add(self)
            if was:
                log.info("%s: connection lost (%s); retrying in %.1fs", self.name, reason, delay)

    def _on_socket_open(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        if isinstance(sock, LoopTlsSocket):  # writable at once: the next poll sends the ClientHello
            self.net.handshaking.add(self)
            self.handshake_until = time.monotonic() + HANDSHAKE_TIMEOUT_S
            self.net.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        else:
            self.net.selector.register(sock, selectors.EVENT_READ, self)

    def _on_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.net.selector.unregister(sock)
        self.net.dirty.discard(self)
        self.net.handshaking.discard(self)
        self.tls_failure = getattr(sock, "failure", None)

    def _on_register_write(self, _c: mqtt.Client, _u: Any, _sock: Any) -> None:
        self.net.dirty.add(self)

    def _on_unregister_write(self, _c: mqtt.Client, _u: Any, _sock: Any) -> None:
        pass


class Net:
    """The selector, the connections with queued packets, and the ones waiting to reconnect."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.dirty: set[Link] = set()
        self.lost: set[Link] = set()
        self.links: list[Link] = []
        self.awaiting: set[Link] = set()  # connections with unacknowledged QoS 1 messages
        self.handshaking: set[Link] = set()  # TLS connections still shaking hands: nothing to write yet
        self.tls = TlsContexts()
        self._misc_at = 0.0

    def add(self, link: Link) -> Link:
        self.links.append(link)
        return link

    def flush(self) -> bool:
        """Write what every connection has queued, as far as the sockets take it; True if all was written."""
        if not self.dirty:
            return True
        pending = False
        for link in list(self.dirty):
            if link in self.handshaking:
                continue  # its CONNECT goes out when the handshake is done
            client = link.client
            client.loop_write()
            if client.want_write():
                pending = True
            else:
                self.dirty.discard(link)
        return not pending

    def poll(self, timeout: float) -> None:
        """Wait up to `timeout` for incoming data (and writability when backlogged), then serve it."""
        writers = {link.client.socket() for link in self.dirty
                   if link.client.want_write() and link not in self.handshaking}
        if writers:
            for key, _ in self.selector.select(0):
                self._serve(key.data)
            self._wait_writable(writers, timeout)
            self.flush()
        else:
            for key, _ in self.selector.select(timeout):
                self._serve(key.data)
        now = time.monotonic()
        if now >= self._misc_at:
            self._misc_at = now + 1.0
            for link in self.links:
                if link.connected:
                    link.client.loop_misc()
            self._expire_handshakes(now)
            self._reconnect(now)

    def _serve(self, link: Link) -> None:
        """Read what a ready socket has, including what an SSL socket already decrypted."""
        if link in self.handshaking:
            link.step_handshake()
            return
        client = link.client
        client.loop_read()
        for _ in range(MAX_PENDING_READS):
            sock = client.socket()
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                break
            client.loop_read()

    def _expire_handshakes(self, now: float) -> None:
        for link in list(self.handshaking):
            sock = link.client.socket()
            if not isinstance(sock, LoopTlsSocket):
                self.handshaking.discard(link)
            elif now >= link.handshake_until:
                link.fail_handshake(sock, f"TLS handshake not done within {HANDSHAKE_TIMEOUT_S:.0f}s")

    def _wait_writable(self, socks: set[Any], timeout: float) -> None:
        with selectors.DefaultSelector() as sel:
            for sock in socks:
                # a read just before may have closed it (broker gone): its fd is then -1
                if sock is not None and sock.fileno() >= 0:
                    sel.register(sock, selectors.EVENT_WRITE)
            if sel.get_map():
                sel.select(timeout)

    def _reconnect(self, now: float) -> None:
        for link in list(self.lost):
            if not link.wanted:
                self.lost.discard(link)
            elif now >= link.retry_at:
                self.lost.discard(link)
                try:
                    link.client.reconnect()
                except OSError as exc:
                    link.retry_later(exc)

    @property
    def backlogged(self) -> bool:
        """True while a connected socket is behind: packets unwritten, or too many unacknowledged."""
        if any(link.client.want_write() for link in self.dirty if link.connected):
            return True
        for link in list(self.awaiting):
            left = link.prune_acked()
            if not left or not link.connected:
                if not left:
                    self.awaiting.discard(link)
                continue
            if left > MAX_UNACKED:
                return True
        return False


def settled(info: mqtt.MQTTMessageInfo) -> bool:
    """Acknowledged, or failed (then paho keeps it for the next connection, or it is gone)."""
    try:
        return info.is_published()
    except (ValueError, RuntimeError):
        return True
