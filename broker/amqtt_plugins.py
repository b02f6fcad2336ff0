"""amqtt plugins that enforce the fleet's identities and ACL (amqtt's own ACL has no %u patterns)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.acl import FleetAcl
from broker.tls import peer_common_name
from protocol.identity import check_password, role_of
from protocol.topics import Topics

log = logging.getLogger(__name__)


class FleetAuthPlugin(BaseAuthPlugin):
    """Accepts a user whose password is derived from the fleet secret (or anyone, if allowed)."""

    @dataclass
    class Config:
        secret: str = ""
        allow_anonymous: bool = False
        topic_prefix: str = "fleetroom"
        require_client_cert: bool = False

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._secret = self.config.secret.encode()
        self._anonymous = self.config.allow_anonymous
        self._acl = FleetAcl(Topics(self.config.topic_prefix))

    def _certificate_fits(self, session: Session) -> bool:
        """A client certificate (required with mutual TLS) must be for the user name the client logs in with."""
        ssl_object = session.ssl_object  # set by amqtt from the TLS stream; None on a plain-text listener
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
        if not peercert:
            if self.config.require_client_cert:
                log.warning("refused login of %r: no client certificate", session.username)
                return False
            return True
        common_name = peer_common_name(peercert)
        if common_name != session.username:
            log.warning("refused login of %r: its client certificate is for %r", session.username, common_name)
            return False
        return True

    async def authenticate(self, *, session: Session) -> bool:
        if not self._certificate_fits(session):
            return False
        if self._anonymous:
            return True
        username = session.username
        ok = bool(self._secret) and role_of(username) is not None
        ok = ok and username is not None and check_password(self._secret, username, session.password)
        if not ok:
            log.warning("refused login of %r", username)
            return False
        # amqtt publishes a Last Will without asking the topic plugins, so check it here: a car
        # must not leave a Will that speaks for another car, nor a retained one where it may not
        # retain. `FleetBroker` calls this before the CONNECT touches any session.
        retain = bool(session.will_retain)
        if session.will_flag and not self._acl.may_publish(username, session.will_topic or "", retain=retain):
            log.warning(
                "refused login of %r: a%s Last Will on %r is not its to publish",
                username, " retained" if retain else "", session.will_topic,
            )
            return False
        return True


class FleetAclPlugin(BaseTopicPlugin):
    """Lets each user publish and read only what its role allows under the fleet's topic root."""

    @dataclass
    class Config:
        topic_prefix: str = "fleetroom"

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self._acl = FleetAcl(Topics(self.config.topic_prefix))

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None:
            return False
        username = session.username
        if action == Action.PUBLISH:
            allowed = self._acl.may_publish(username, topic)
        else:
            allowed = self._acl.may_read(username, topic)
        if not allowed and action != Action.RECEIVE:
            log.warning("denied %s of %r on %r", action, username, topic)
        return allowed
