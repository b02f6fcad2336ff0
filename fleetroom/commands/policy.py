"""Change the dispatcher's matchmaking policy: `fleetroom policy NAME` (as the control room's palette does).

Sends SetPolicy through the operator link and prints one line; refuses in one line (exit 1) when
no dispatcher is online, since the command would reach nobody. The dispatcher's next summary
names the policy in force.
"""

from __future__ import annotations

import argparse

import aiomqtt

from fleetroom.commands.submit import _dispatcher_online
from fleetroom.common import CliError, add_broker_arguments, broker_for, run_async, setup_logging, topics_from
from mqttlink import BrokerUrl, NoDispatcher, OperatorLink, client_id_of, stay_connected
from protocol import MatchPolicy, Topics

SENDER = "operator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", choices=[p.value for p in MatchPolicy], metavar="NAME",
                        help="one of: " + ", ".join(p.value for p in MatchPolicy))
    add_broker_arguments(parser)


async def send_policy(url: BrokerUrl, topics: Topics, policy: MatchPolicy) -> None:
    """Publish SetPolicy once a dispatcher is seen online; NoDispatcher if none is."""

    async def session(client: aiomqtt.Client) -> None:
        online = await _dispatcher_online(client, topics)
        await OperatorLink(client, topics, sender=SENDER, dispatcher_online=lambda: online).set_policy(policy)

    await stay_connected(url, client_id_of(url, "policy"), session)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    policy = MatchPolicy(args.policy)
    url = broker_for(args, "operator")
    topics = topics_from(args)
    try:
        run_async(send_policy(url, topics, policy))
    except NoDispatcher:
        raise CliError(f"no dispatcher is online under {topics.prefix}/: policy {policy.value} not sent",
                       exit_code=1) from None
    print(f"policy {policy.value} sent to the dispatcher under {topics.prefix}/")
    return 0
