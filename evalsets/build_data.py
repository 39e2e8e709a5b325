"""Build the demo customer-support evalset (jsonl files next to this script).

Deterministic: fixed seed, hand-written templates x small value lists. Re-run with
``python evalsets/build_data.py`` and commit the jsonl it writes; ``--check`` only verifies
that the committed files match what the script would write (useful in CI).

Tasks written:
    support_intent.jsonl          120 items, 20 per intent (6 intents), one template used once each
    support_intent_fewshot.jsonl  6 hand-written shots (one per intent), not in the test split
    support_facts.jsonl           120 items, 10 per fact type (12 types); each prompt states
                                  3 policy facts and asks about one of them
    support_facts_fewshot.jsonl   3 shots built the same way from a different seed, disjoint from test
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240611

INTENTS = ["refund", "delivery", "account", "product", "cancel", "complaint"]

PRODUCTS = [
    "wireless headphones", "running shoes", "coffee maker", "phone case", "winter jacket",
    "desk lamp", "yoga mat", "backpack", "blender", "smart watch", "bluetooth speaker",
    "water bottle", "office chair", "electric kettle", "rain boots", "laptop stand",
]

# One template per test item: 20 per intent. Slots: {product}, {order}, {n}, {price}.
INTENT_TEMPLATES: dict[str, list[str]] = {
    "refund": [
        "I returned the {product} last week. When will I get my money back?",
        "Can I get a refund for the {product}? It stopped working after two days.",
        "I want my money back for order #{order}.",
        "The refund for my {product} has not shown up on my credit card yet.",
        "Please refund me for the {product}, it does not fit.",
        "How long does it take for a refund to appear on my bank statement?",
        "I sent back the {product} and I still have not been refunded.",
        "Could you refund the {price} dollars I paid for the {product}?",
        "I was charged twice for order #{order}. Please refund the extra payment.",
        "The {product} arrived broken. I would like a full refund, not a replacement.",
        "Has my refund for order #{order} been processed yet?",
        "I'd like to return the {product} for a refund.",
        "Can the refund for the {product} go to my PayPal account instead of my card?",
        "Will I get a refund for the shipping cost as well as for the {product}?",
        "My refund for order #{order} was for the wrong amount.",
        "What is the status of my refund for the {product}?",
        "I returned the {product} to your store. How do I get reimbursed?",
        "Please issue a refund to my original payment method for order #{order}.",
        "Do I get my money back if I return the {product} after opening it?",
        "I want a refund for the {product} because it was not as described.",
    ],
    "delivery": [
        "Where is my package? Order #{order} still has not arrived.",
        "When will my {product} be delivered?",
        "The tracking number for order #{order} has not updated in {n} days.",
        "Has my {product} shipped yet?",
        "Can you tell me the delivery date for order #{order}?",
        "The tracking page says my {product} was delivered, but it is not at my door. Where is it?",
        "How long will shipping take for the {product} I ordered yesterday?",
        "Which courier is delivering order #{order}?",
        "Is order #{order} out for delivery today?",
        "I ordered a {product} {n} days ago. When will it arrive?",
        "Can I get a tracking number for my {product}?",
        "Will my {product} arrive before the weekend?",
        "The estimated delivery date for order #{order} has passed. Where is my parcel?",
        "Is my {product} still in the warehouse or on its way to me?",
        "What is the current shipping status of order #{order}?",
        "My package with the {product} seems stuck in transit. Any update on the delivery?",
        "Do you know when the courier will drop off my {product}?",
        "Can you check where my parcel is? The order number is {order}.",
        "I need the {product} by Friday. Has it been dispatched?",
        "Tracking for order #{order} only says 'label created'. When will it ship?",
    ],
    "account": [
        "I forgot my password and can't log in to my account.",
        "How do I change the email address on my account?",
        "I am not receiving the password reset email.",
        "My account is locked after too many login attempts.",
        "How can I delete my customer account?",
        "I can't sign in with my Google account anymore.",
        "How do I update the default address saved in my account profile?",
        "The two-factor login code never arrives on my phone, so I can't sign in.",
        "Someone else may have accessed my account. How do I secure it?",
        "I want to change the username on my account.",
        "The login page keeps saying my password is wrong even though it's correct.",
        "How do I create an account on your website?",
        "Can I merge my two customer accounts into one?",
        "I changed my phone number. How do I update it in my account settings?",
        "I'm stuck on the sign-in screen after resetting my password.",
        "How do I turn off marketing emails in my account settings?",
        "My account profile shows someone else's name. How do I fix it?",
        "I keep getting logged out of my account every few minutes.",
        "How do I save a new credit card to my account?",
        "I never got the account verification email after signing up.",
    ],
    "product": [
        "Is the {product} available in blue?",
        "What size should I order for the {product}?",
        "Does the {product} come with a warranty?",
        "Is the {product} waterproof?",
        "What material is the {product} made of?",
        "Does the {product} work with an iPhone?",
        "How heavy is the {product}?",
        "Will the {product} be back in stock soon?",
        "What are the dimensions of the {product}?",
        "How do I clean the {product}?",
        "Does the {product} come in a larger size?",
        "What is the difference between the {product} and the {product} Pro?",
        "Does the {product} need batteries?",
        "Is the {product} suitable for children?",
        "What colors does the {product} come in?",
        "How long does the battery of the {product} last?",
        "What do other customers say about the {product}?",
        "Where is the {product} made?",
        "Can I buy a replacement part for the {product}?",
        "Does the {product} include a carrying case?",
    ],
    "cancel": [
        "Please cancel my order #{order}.",
        "I ordered the {product} by mistake. Can I cancel it before it ships?",
        "How do I cancel an order I placed an hour ago?",
        "Please cancel the {product} from my order, I don't need it anymore.",
        "Is it too late to cancel order #{order}?",
        "Can you stop order #{order}? I changed my mind and want to cancel.",
        "I need to cancel my order for the {product} right away.",
        "Please don't ship order #{order}, I want to cancel it.",
        "I placed the same order twice. Please cancel order #{order}.",
        "Can I cancel just the {product} and keep the rest of my order?",
        "How can I cancel my purchase of the {product}?",
        "I'd like to cancel order #{order} before it is dispatched.",
        "Is there a fee to cancel order #{order}?",
        "I found the {product} cheaper elsewhere, please cancel my order.",
        "Where is the cancel button for my order?",
        "Cancel order #{order} please, I will place a new one with the right address.",
        "I no longer want the {product}. Please cancel the order before shipping.",
        "Can you confirm that my order #{order} has been cancelled?",
        "My order for the {product} hasn't shipped yet, so I'd like to cancel it.",
        "I want to cancel my pre-order for the {product}.",
    ],
    "complaint": [
        "Your customer service agent was very rude to me on the phone.",
        "I am very unhappy with how long it took you to answer my email.",
        "The packaging of my {product} was excessive and wasteful. I am not happy about it.",
        "Your website is so slow and confusing, it's a terrible experience.",
        "I've been waiting on hold for an hour. This is unacceptable service.",
        "I want to file a complaint about the delivery driver who was rude to me.",
        "I want to make a formal complaint about the staff at your store.",
        "The {product} looks much cheaper than in your ads. I am very disappointed.",
        "Nobody has answered my three emails. Your support is awful.",
        "I'm disappointed with the way your team handled my issue.",
        "Your chatbot is useless and keeps sending me in circles.",
        "The {product} had a horrible smell when I opened the box. Very poor quality.",
        "I'm annoyed that you send me marketing emails every single day.",
        "This is the worst shopping experience I have ever had.",
        "Your manager promised to call me back and never did.",
        "The price of the {product} went up right after I bought it, which feels dishonest.",
        "I want to complain about the constant pop-up ads on your site.",
        "Your staff ignored me when I asked for help in the store.",
        "I'm fed up with the poor communication from your company.",
        "I'm writing to complain about the dirty, damaged box my {product} came in.",
    ],
}

# Few-shot examples for the intent task: hand-written, not produced by any template above.
INTENT_SHOTS = [
    ("My package was supposed to come on Monday and it's still not here.", "delivery"),
    ("The headphones broke, I want my money refunded.", "refund"),
    ("I can't remember which email I used to log in.", "account"),
    ("Does this kettle switch off automatically when the water boils?", "product"),
    ("Please cancel the order I just placed, I picked the wrong item.", "cancel"),
    ("The person at your help desk was extremely unfriendly.", "complaint"),
]

CATEGORIES = ["laptops", "phones", "headphones", "kitchen appliances", "watches", "speakers"]
CARRIERS = ["UPS", "FedEx", "DHL", "USPS"]
CITIES = ["Denver", "Austin", "Chicago", "Boston", "Seattle", "Portland", "Atlanta", "Phoenix"]
STATUSES = ["shipped", "processing", "delivered", "cancelled"]
CODES = ["WELCOME10", "SPRING15", "SAVE20", "HELLO5", "FIRST25", "NEWBIE12"]


def _fact(kind: str, rng: random.Random) -> tuple[str, str, str]:
    """Return (policy sentence, question, answer) for one fact of the given kind."""
    if kind == "return_days":
        n = rng.choice([14, 30, 45, 60, 90])
        return (f"Items can be returned within {n} days of delivery.",
                "How many days do customers have to return an item?", str(n))
    if kind == "exchange_days":
        n = rng.choice([7, 21, 35, 40, 100])
        return (f"Exchanges are accepted within {n} days of purchase.",
                "How many days do customers have to exchange an item?", str(n))
    if kind == "refund_days":
        n = rng.choice([3, 5, 7, 10])
        return (f"Refunds are processed within {n} business days.",
                "Within how many business days are refunds processed?", str(n))
    if kind == "shipping_days":
        n = rng.choice([2, 4, 6, 8])
        return (f"Standard shipping takes {n} business days.",
                "How many business days does standard shipping take?", str(n))
    if kind == "free_shipping":
        n = rng.choice([25, 35, 50, 75, 100])
        return (f"Orders over {n} dollars ship for free.",
                "Above how many dollars is shipping free?", str(n))
    if kind == "restocking_fee":
        n = rng.choice([10, 15, 20, 25])
        return (f"Opened items have a restocking fee of {n} percent.",
                "What percent is the restocking fee for opened items?", str(n))
    if kind == "warranty":
        cat, n = rng.choice(CATEGORIES), rng.choice([1, 2, 3, 5])
        return (f"All {cat} come with a {n} year warranty.",
                f"How many years of warranty do {cat} come with?", str(n))
    if kind == "carrier":
        c = rng.choice(CARRIERS)
        return (f"All orders are shipped with {c}.", "Which carrier ships the orders?", c)
    if kind == "gift_card":
        n = rng.choice([6, 12, 18, 24])
        return (f"Gift cards expire after {n} months.",
                "After how many months do gift cards expire?", str(n))
    if kind == "warehouse":
        c = rng.choice(CITIES)
        return (f"Our warehouse is located in {c}.",
                "In which city is the warehouse located?", c)
    if kind == "order_status":
        oid, s = rng.randint(10000, 99999), rng.choice(STATUSES)
        return (f"Order {oid} is {s}.", f"What is the status of order {oid}?", s)
    if kind == "discount_code":
        code = rng.choice(CODES)
        n = int("".join(ch for ch in code if ch.isdigit()))
        return (f"The code {code} gives {n} percent off the first order.",
                "Which code gives a discount on the first order?", code)
    raise ValueError(kind)


FACT_KINDS = [
    "return_days", "exchange_days", "refund_days", "shipping_days", "free_shipping",
    "restocking_fee", "warranty", "carrier", "gift_card", "warehouse", "order_status",
    "discount_code",
]


def _facts_item(kind: str, rng: random.Random) -> dict:
    sentence, question, answer = _fact(kind, rng)
    others = rng.sample([k for k in FACT_KINDS if k != kind], 2)
    sentences = [sentence] + [_fact(k, rng)[0] for k in others]
    rng.shuffle(sentences)
    return {"kind": kind, "policy": " ".join(sentences), "question": question, "answer": answer}


def build_intent(rng: random.Random) -> list[dict]:
    items = []
    for intent in INTENTS:
        for tpl in INTENT_TEMPLATES[intent]:
            text = tpl.format(
                product=rng.choice(PRODUCTS), order=rng.randint(10000, 99999),
                n=rng.randint(3, 12), price=rng.choice([19, 29, 45, 60, 89, 120]),
            )
            items.append({"text": text, "label": intent, "gold": INTENTS.index(intent)})
    rng.shuffle(items)
    return [{"id": f"intent-{i:03d}", **it} for i, it in enumerate(items)]


def build_facts(
    rng: random.Random, per_kind: int, prefix: str, kinds: list[str] = FACT_KINDS,
    avoid: set[str] = frozenset(),
) -> list[dict]:
    items, seen = [], set(avoid)
    for kind in kinds:
        made = 0
        while made < per_kind:
            it = _facts_item(kind, rng)
            key = it["policy"] + "|" + it["question"]
            if key in seen:
                continue
            seen.add(key)
            items.append(it)
            made += 1
    rng.shuffle(items)
    return [{"id": f"{prefix}-{i:03d}", **it} for i, it in enumerate(items)]


def build_all() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    intent = build_intent(rng)
    facts = build_facts(rng, per_kind=10, prefix="facts")
    shot_rng = random.Random(SEED + 1)
    avoid = {f["policy"] + "|" + f["question"] for f in facts}
    # Shots mix a number, a word and a code answer so the model sees the short-answer format.
    facts_shots = build_facts(shot_rng, per_kind=1, prefix="facts-shot",
                              kinds=["free_shipping", "warehouse", "restocking_fee"], avoid=avoid)
    intent_shots = [
        {"id": f"intent-shot-{i}", "text": t, "label": lab, "gold": INTENTS.index(lab)}
        for i, (t, lab) in enumerate(INTENT_SHOTS)
    ]
    return {
        "support_intent.jsonl": intent,
        "support_intent_fewshot.jsonl": intent_shots,
        "support_facts.jsonl": facts,
        "support_facts_fewshot.jsonl": facts_shots,
    }


def _dump(items: list[dict]) -> str:
    return "".join(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n" for it in items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the committed files, write nothing")
    args = ap.parse_args(argv)
    stale = []
    for name, items in build_all().items():
        path, text = HERE / name, _dump(items)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.name}: {len(items)} items")
    if stale:
        print("stale (re-run evalsets/build_data.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
