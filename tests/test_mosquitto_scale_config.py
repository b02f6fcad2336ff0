"""The Mosquitto settings for a million cars, on a real mosquitto: it starts with them, and a reader
that falls behind loses no QoS 1 message (Mosquitto's defaults drop all but 1,020 of them)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto_config import MAX_INFLIGHT_MESSAGES, SCALE_SETTINGS, anonymous_conf, write_mosquitto_config
from protocol.topics import Topics
from tests.support.brokers import MosquittoProcess, built_plugin, free_port, mosquitto_program
from tests.support.waiting import wait_until

BEHIND_BY = 5 * MAX_INFLIGHT_MESSAGES  # messages a reader has not acknowledged when the burst ends


def test_every_setting_has_its_reason_in_the_config() -> None:
    text = anonymous_conf(1883)
    for setting, why in SCALE_SETTINGS:
        assert f"# {why}\n{setting}\n" in text
    assert "max_queued_messages 1000000" in text and "set_tcp_nodelay true" in text


async def test_a_secured_mosquitto_starts_with_the_scale_settings(tmp_path: Path) -> None:
    port = free_port()
    write_mosquitto_config(tmp_path, b"s3cret", Topics("scale"), port=port, plugin=built_plugin())
    proc = MosquittoProcess(tmp_path, port)
    await proc.start()  # fails if mosquitto refuses a line of its config
    try:
        log = (tmp_path / "mosquitto.log").read_text()
        assert "Error" not in log and "Unknown" not in log, log
    finally:
        await proc.stop()


class SlowReader:
    """A paho client that withholds its acknowledgements until `release()`: a reader that fell behind."""

    def __init__(self, port: int, topic: str) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="slow-reader", manual_ack=True)
        self.received = 0
        self.subscribed = threading.Event()
        self._held: list[int] = []
        self._released = False
        self._lock = threading.Lock()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.received += 1
            if self._released:
                client.ack(message.mid, message.qos)
            else:
                self._held.append(message.mid)

    def release(self) -> None:
        """Acknowledge what was held, and every message from now on."""
        with self._lock:
            self._released = True
            held, self._held = self._held, []
        for mid in held:
            self.client.ack(mid, 1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_a_reader_behind_by_thousands_loses_no_qos1_message(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(anonymous_conf(port))
    broker = MosquittoProcess(tmp_path, port)
    await broker.start()
    reader = SlowReader(port, "burst/#")
    try:
        await wait_until(reader.subscribed.is_set, 10, "the slow reader's subscription")
        lines = b"".join(b"message %d\n" % i for i in range(BEHIND_BY))
        pub = [mosquitto_program("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-q", "1",
               "-t", "burst/x", "-l"]
        done = await asyncio.to_thread(subprocess.run, pub, input=lines, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        # the broker has taken the whole burst while the reader acknowledged nothing of it
        assert reader.received <= MAX_INFLIGHT_MESSAGES
        reader.release()
        await wait_until(lambda: reader.received == BEHIND_BY, 30, f"all {BEHIND_BY} messages")
    finally:
        reader.stop()
        await broker.stop()
