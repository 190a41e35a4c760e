"""An example control program for a qnemu network, as a control-software team would write
it: plain MQTT (aiomqtt) and JSON, nothing imported from qnemu.

    python examples/controller/controller.py --url mqtt://127.0.0.1:1883 \
        --network metro --src alice --dst bob --pairs 10

It watches every node's events and retained state, waits until both nodes are
"running", asks `--src` for `--pairs` keep-mode pairs with `--dst`, prints each pair as
it arrives, then frees both halves of every pair (the src halves at src, the dst halves
at dst) and prints one JSON summary line. Exit status: 0 done, 1 the request failed,
2 the network did not answer in time.

With `--link-drill` (src and dst must be neighbours) it then rehearses an outage: it
cuts the fibre with a `fault` request, waits for src to report `link_down`, restores
the fibre and waits for `link_up` — what a controller would do to reroute and come back.
"""

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from urllib.parse import urlsplit

import aiomqtt

TIMEOUT_S = 30.0


class Controller:
    """Talks to one network: requests with correlation ids, events and states as they come."""

    def __init__(self, client: aiomqtt.Client, network: str):
        self.client = client
        self.network = network
        self.states: dict[str, dict] = {}
        self.events: Counter[str] = Counter()
        self.responses: dict[str, asyncio.Queue] = {}
        self.state_changed = asyncio.Event()
        self.seen: list[tuple[str, str, dict]] = []  # (node, event kind, body)
        self.event_arrived = asyncio.Event()
        self.session = uuid.uuid4().hex[:8]
        self.count = 0

    async def watch(self) -> None:
        """Route every incoming message: states, events, responses to requests."""
        await self.client.subscribe(f"qnemu/{self.network}/+/state", qos=1)
        await self.client.subscribe(f"qnemu/{self.network}/+/event/+", qos=1)
        async for message in self.client.messages:
            _, _, node, section, *rest = message.topic.value.split("/")
            body = json.loads(message.payload)
            if section == "state":
                self.states[node] = body
                self.state_changed.set()
            elif section == "event":
                self.events[rest[0]] += 1
                self.seen.append((node, rest[0], body))
                self.event_arrived.set()
                if rest[0] != "pair_delivered":  # the pairs are printed from the responses
                    print(f"event {node}/{rest[0]}: {_brief(body)}")
            elif section == "response" and rest[0] in self.responses:
                await self.responses[rest[0]].put(body)

    async def wait_running(self, *nodes: str) -> None:
        while not all(self.states.get(n, {}).get("status") == "running" for n in nodes):
            self.state_changed.clear()
            await self.state_changed.wait()

    async def wait_event(self, node: str, kind: str, **fields) -> dict:
        """The first event `kind` from `node` (seen already or to come) with these fields."""
        while True:
            for source, seen_kind, body in self.seen:
                wanted = all(body.get(key) == value for key, value in fields.items())
                if (source, seen_kind) == (node, kind) and wanted:
                    return body
            self.event_arrived.clear()
            await self.event_arrived.wait()

    async def call(self, node: str, kind: str, **fields) -> dict:
        """A request answered by one final message: that message."""
        correlation_id = await self.request(node, kind, **fields)
        async for answer in self.answers(correlation_id):
            last = answer
        return last

    async def request(self, node: str, kind: str, **fields) -> str:
        """Publish a request; returns its correlation id (responses go to its queue)."""
        self.count += 1
        correlation_id = f"ctl-{self.session}-{self.count}"
        self.responses[correlation_id] = asyncio.Queue()
        base = f"qnemu/{self.network}/{node}"
        # Subscribe to the answer before asking, so not even the first pair is missed.
        await self.client.subscribe(f"{base}/response/{correlation_id}", qos=1)
        payload = json.dumps({"correlation_id": correlation_id, **fields})
        await self.client.publish(f"{base}/request/{kind}", payload, qos=1)
        return correlation_id

    async def answers(self, correlation_id: str):
        """Every response to one request, up to and including the final one."""
        queue = self.responses[correlation_id]
        while True:
            body = await queue.get()
            yield body
            if body["final"]:
                del self.responses[correlation_id]
                return


async def run(args: argparse.Namespace) -> int:
    url = urlsplit(args.url)
    async with aiomqtt.Client(url.hostname, url.port or 1883) as client:
        controller = Controller(client, args.network)
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(controller.watch())
            try:
                async with asyncio.timeout(args.timeout_s):
                    status = await drive(controller, args)
            except TimeoutError:
                print("error: the network did not answer in time", file=sys.stderr)
                status = 2
            watcher.cancel()
    return status


async def drive(controller: Controller, args: argparse.Namespace) -> int:
    await controller.wait_running(args.src, args.dst)
    print(f"{args.src} and {args.dst} are running; asking for {args.pairs} pairs")
    request = await controller.request(
        args.src,
        "entangle",
        remote_node_id=args.dst,
        number=args.pairs,
        minimum_fidelity=args.minimum_fidelity,
        max_time_s=args.max_time_s,
        type="keep",
    )
    pairs, failure = [], None
    async for answer in controller.answers(request):
        if answer["kind"] == "pair":
            pair = answer["pair"]
            pairs.append(pair)
            src_qubit, dst_qubit = pair["qubits"]
            print(
                f"pair {pair['sequence_number']}: {pair['src']}-{pair['dst']} "
                f"{pair['bell_state']} fidelity {pair['fidelity']:.4f} "
                f"qubits {src_qubit}@{pair['src']} {dst_qubit}@{pair['dst']}"
            )
        elif answer["kind"] == "error":
            failure = answer
            print(f"request failed: {answer['error_code']}: {answer['message']}")
    # Kept pairs occupy memory until freed: give back every half we were given.
    freed = {}
    for node, index in ((args.src, 0), (args.dst, 1)):
        qubits = [pair["qubits"][index] for pair in pairs]
        if not qubits:
            continue
        free = await controller.request(node, "free", qubits=qubits)
        async for answer in controller.answers(free):
            freed[node] = answer.get("freed", 0)
    drill = await link_drill(controller, args.src, args.dst) if args.link_drill else None
    summary = {
        "link_drill": drill,
        "pairs": len(pairs),
        "fidelities": [pair["fidelity"] for pair in pairs],
        "freed": freed,
        "error": None if failure is None else failure["error_code"],
        "events": dict(controller.events),
    }
    print("summary " + json.dumps(summary, sort_keys=True))
    return 0 if failure is None else 1


async def link_drill(controller: Controller, src: str, dst: str) -> dict:
    """Cut the fibre src-dst, see src report it down, restore it, see it up again."""
    cut = await controller.call(src, "fault", fault="cut", remote_node_id=dst)
    if cut["kind"] != "fault":
        return {"error": cut["error_code"], "message": cut["message"]}
    down = await controller.wait_event(src, "link_down", peer=dst)
    print(f"link {down['link']} is down ({down['reason']}): a controller would reroute now")
    await controller.call(src, "fault", fault="restore", remote_node_id=dst)
    up = await controller.wait_event(src, "link_up", peer=dst)
    print(f"link {up['link']} is up again")
    return {"link": down["link"], "down_reason": down["reason"], "up_again": True}


def _brief(body: dict) -> str:
    skip = {"network", "node", "kind", "wall_time_s", "emulated_time_s"}
    return json.dumps({key: value for key, value in body.items() if key not in skip})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="MQTT broker URL")
    parser.add_argument("--network", required=True, help="the topology's name")
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--minimum-fidelity", type=float, default=0.0)
    parser.add_argument("--max-time-s", type=float, default=10.0, help="emulated deadline")
    parser.add_argument("--timeout-s", type=float, default=TIMEOUT_S, help="wall-clock limit")
    parser.add_argument(
        "--link-drill", action="store_true", help="then cut the src-dst fibre and restore it"
    )
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
