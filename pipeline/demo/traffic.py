"""Demo production traffic: a week of the demo online store's chat requests, generated with a fixed seed.

A mix of what the store's clients send the support model (scripts/make_demo_traffic.py writes it to
traffic/demo.jsonl; release.yaml's gates.replay replays it):

* web chat (30%): the support assistant answering a customer, `stop` at the next customer turn
* order extraction (25%): `response_format` with a JSON Schema, from an email-bot reading customer mail
* tool calls (25%): the agent-assist client with lookup_order / create_return / check_stock tools
* triage (20%): `response_format` json_object, {"intent", "urgency"}

Every request sets `max_tokens` and temperature 0. Customers write their emails, phone numbers and card
numbers into messages, as real ones do (all fake: example.com, 555 numbers, test card numbers), and some
requests are client retries (duplicates). Each record carries the answer production gave, recorded under
`served_name` (by default a previous production version, so the gate asks the current one).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

SEED = 20261124
COUNT = 300
DUPLICATE_RATE = 0.04
PREVIOUS_PRODUCTION = "chat@5e1b7c2a9d04"  # last week's production: its recorded answers are not paired

SYSTEM = ("You are the customer-support assistant of Northwind Outfitters, an online store for outdoor clothing "
          "and gear. Be brief, friendly and accurate.")
PRODUCTS = ["trail running shoes", "rain jacket", "down vest", "hiking socks", "fleece pullover", "tent footprint",
            "merino base layer", "insulated bottle", "daypack 22L", "softshell pants"]
SIZES = ["XS", "S", "M", "L", "XL", "EU 42", "EU 44", "US 9"]
NAMES = ["maria.k", "j.okafor", "lena.schmidt", "tom.baker", "aiko.tanaka", "r.silva", "noah.w", "priya.n"]
CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881"]  # test card numbers
CHAT_QUESTIONS = [
    "Hi, where is my order {order}? It was supposed to arrive yesterday.",
    "Can I still change the size of my {product} in order {order} to {size}?",
    "Do you ship to Norway, and how long does it take?",
    "My {product} has a broken zipper after two weeks. What can I do? You can reach me at {email}.",
    "What is your return policy for worn items?",
    "I was charged twice for order {order}, card {card}. Please refund one of them.",
    "Is the {product} waterproof or only water resistant?",
    "Please call me back at {phone} about my order {order}.",
    "How do I wash the {product}?",
    "Can I use two discount codes on one order?",
]
MAILS = [
    "Hello, order {order} arrived but the {product} is damaged. Please send a replacement. {name}, {phone}",
    "Hi! I ordered a {product} in size {size} (order {order}) and it is too small. I want to return it. "
    "Thanks, {email}",
    "Order {order}: still not delivered after 10 days. This is unacceptable, I want my money back.",
    "Dear team, the {product} from order {order} is the wrong color. Can you exchange it? Regards, {name}",
]
TRIAGE = [
    "Customer message: \"{text}\"\nClassify it. Reply in JSON with keys intent (orders, returns, product, billing, "
    "other) and urgency (low, normal, high).",
]
AGENT_ASKS = [
    ("Customer asks about the status of order {order}.", "lookup_order"),
    ("Customer wants to return the {product} from order {order} because it does not fit.", "create_return"),
    ("Is the {product} in size {size} in stock?", "check_stock"),
    ("Customer says order {order} never arrived; look it up.", "lookup_order"),
]
ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^NW-[0-9]{6}$"},
        "issue": {"enum": ["damaged", "wrong_size", "wrong_item", "late", "other"]},
        "wants": {"enum": ["refund", "replacement", "exchange", "information"]},
    },
    "required": ["order_id", "issue", "wants"],
    "additionalProperties": False,
}
# `strict: true` (OpenAI's per-function flag): the agent-assist client relies on valid arguments, and vLLM (0.32,
# hermes parser, tool_choice named or required) constrains only the call's envelope of a tool without it, its
# arguments stay free-form (they came back as a bare string: `"arguments": "NW-867589"`); docs/stages.md, replay.
TOOLS = [
    {"type": "function", "function": {
        "name": "lookup_order", "description": "Find an order by its id.", "strict": True,
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^NW-[0-9]{6}$"}},
                       "required": ["order_id"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "create_return", "description": "Open a return for an order.", "strict": True,
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string", "pattern": "^NW-[0-9]{6}$"},
            "reason": {"enum": ["too_small", "too_large", "damaged", "not_as_described", "other"]}},
            "required": ["order_id", "reason"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "check_stock", "description": "Stock of a product in a size.", "strict": True,
        "parameters": {"type": "object", "properties": {"product": {"type": "string"}, "size": {"type": "string"}},
                       "required": ["product"], "additionalProperties": False}}},
]


def _slots(rng: random.Random) -> dict[str, str]:
    name = rng.choice(NAMES)
    return {"order": f"NW-{rng.randrange(100000, 999999)}", "product": rng.choice(PRODUCTS), "size": rng.choice(SIZES),
            "email": f"{name}@example.com", "name": name.replace(".", " ").title(),
            "phone": f"+1 415 555 {rng.randrange(1000, 9999)}", "card": rng.choice(CARDS)}


def _completion(served_name: str, n: int, content: str | None, tool_calls: list[dict[str, Any]] | None = None,
                ) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": f"chatcmpl-demo-{n:05d}", "object": "chat.completion", "model": served_name,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}]}


def _web_chat(rng: random.Random, s: dict[str, str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    question = rng.choice(CHAT_QUESTIONS).format(**s)
    request = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
               "max_tokens": 96, "temperature": 0, "stop": ["\nCustomer:"]}
    answer = "Thanks for reaching out! I'm sorry for the trouble. I have checked this for you and " \
             "our team will follow up by email within one business day."
    return request, "web", {"content": answer}


def _extraction(rng: random.Random, s: dict[str, str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    mail = rng.choice(MAILS).format(**s)
    request = {"messages": [{"role": "system", "content": "Extract the order details from the customer's email."},
                            {"role": "user", "content": mail}],
               "response_format": {"type": "json_schema",
                                   "json_schema": {"name": "order_issue", "schema": ORDER_SCHEMA, "strict": True}},
               "max_tokens": 96, "temperature": 0}
    answer = json.dumps({"order_id": s["order"], "issue": rng.choice(["damaged", "wrong_size", "late"]),
                         "wants": rng.choice(["refund", "replacement", "exchange"])})
    return request, "email-bot", {"content": answer}


def _tools(rng: random.Random, s: dict[str, str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    ask, tool = rng.choice(AGENT_ASKS)
    choice: Any = {"type": "function", "function": {"name": tool}} if rng.random() < 0.5 else "required"
    request = {"messages": [{"role": "system", "content": "You help support agents by calling the store's tools."},
                            {"role": "user", "content": ask.format(**s)}],
               "tools": TOOLS, "tool_choice": choice, "max_tokens": 96, "temperature": 0}
    args = {"lookup_order": {"order_id": s["order"]}, "create_return": {"order_id": s["order"], "reason": "too_small"},
            "check_stock": {"product": s["product"], "size": s["size"]}}[tool]
    call = {"id": f"call_{rng.randrange(16**8):08x}", "type": "function",
            "function": {"name": tool, "arguments": json.dumps(args)}}
    return request, "agent-assist", {"content": None, "tool_calls": [call]}


def _triage(rng: random.Random, s: dict[str, str]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    text = rng.choice(CHAT_QUESTIONS + MAILS).format(**s)
    request = {"messages": [{"role": "user", "content": TRIAGE[0].format(text=text)}],
               "response_format": {"type": "json_object"}, "max_tokens": 64, "temperature": 0}
    return request, "triage", {"content": json.dumps({"intent": "orders", "urgency": "normal"})}


KINDS = ((_web_chat, 0.30), (_extraction, 0.25), (_tools, 0.25), (_triage, 0.20))


def generate(count: int = COUNT, seed: int = SEED, served_name: str = PREVIOUS_PRODUCTION) -> list[dict[str, Any]]:
    """`count` records (duplicates included), the same for the same arguments."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    while len(records) < count:
        if records and rng.random() < DUPLICATE_RATE:  # a client retry: the same request again
            records.append(json.loads(json.dumps(rng.choice(records))))
            continue
        make = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        request, client, answer = make(rng, _slots(rng))
        n = len(records)
        records.append({"id": f"req-{n:05d}", "tags": {"client": client},
                        "request": {"model": "support", **request},
                        "response": _completion(served_name, n, answer["content"], answer.get("tool_calls"))})
    return records


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    return path
