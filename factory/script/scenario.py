"""The scenario bank: topics x settings x personas x styles x modes, drawn by seed.

The bank is plain data so it can grow without code changes; `bank_size()` reports how many
distinct scenarios it can produce (a 400K run needs far more than 400K).
"""

from __future__ import annotations

import numpy as np

from factory.models import Mode, Persona, Scenario

TOPICS = [
    "planning a weekend hiking trip", "fixing a slow home wifi network", "choosing a first pet",
    "learning to cook a curry", "preparing for a job interview", "repairing a leaking kitchen tap",
    "saving money on groceries", "training for a first ten kilometre run", "picking a used car",
    "organising a birthday party", "starting a vegetable garden", "understanding a phone bill",
    "booking a train journey across the country", "getting better sleep", "learning to play guitar",
    "moving to a new city", "setting up a small online shop", "choosing a laptop for study",
    "a noisy neighbour problem", "planning a family reunion", "making bread at home",
    "studying for a maths exam", "keeping houseplants alive", "reducing screen time",
    "writing a short speech for a wedding", "visiting a museum with kids", "a delayed flight",
    "returning a faulty blender", "learning a second language", "painting a bedroom",
    "a first day at a new job", "finding a good book to read", "making a monthly budget",
    "cleaning up an old garage", "choosing running shoes", "meal prep for a busy week",
    "a broken bicycle chain", "planning a road trip", "adopting a rescue dog",
    "dealing with a cold", "picking a mobile phone plan", "hosting a dinner for friends",
    "camping in the rain", "a recipe that went wrong", "building a bookshelf",
    "the best way to learn to swim", "organising digital photos", "getting into bird watching",
    "preparing a car for winter", "choosing a gym", "writing a cover letter",
    "a power cut at home", "making coffee at home", "planning a picnic", "learning to knit",
    "a lost wallet", "setting up a home office", "teaching a child to ride a bike",
    "volunteering at a food bank", "buying a second hand sofa", "visiting grandparents",
]

SETTINGS = [
    "at home in the evening", "on a phone call", "during a lunch break", "on a bus",
    "in a quiet cafe", "while walking the dog", "in the kitchen", "at the office",
    "over a video call", "in the car", "on a Sunday morning", "late at night",
    "in a hotel room", "at a train station", "in the garden", "after work",
    "before a meeting", "during a rainy afternoon", "on holiday", "in a waiting room",
]

USER_PERSONAS = [
    Persona(name="Sam", description="a busy nurse who works night shifts"),
    Persona(name="Alex", description="a university student on a tight budget"),
    Persona(name="Jordan", description="a retired teacher who loves detail"),
    Persona(name="Priya", description="a software developer who asks precise questions"),
    Persona(name="Tom", description="a carpenter who prefers plain talk"),
    Persona(name="Maria", description="a mother of two young children"),
    Persona(name="Chen", description="a graduate student new to the country"),
    Persona(name="Lucy", description="a shop owner with little free time"),
    Persona(name="Omar", description="a bus driver who likes to joke"),
    Persona(name="Grace", description="a cautious first-time home owner"),
    Persona(name="Ben", description="a teenager who is curious about everything"),
    Persona(name="Nina", description="a musician who works from home"),
    Persona(name="Raj", description="an accountant who likes a plan"),
    Persona(name="Ella", description="a nurse student who is often tired"),
    Persona(name="Max", description="a keen cyclist and amateur mechanic"),
    Persona(name="Sofia", description="a chef who is short on patience"),
    Persona(name="Leo", description="a new father who sleeps very little"),
    Persona(name="Hana", description="a librarian who speaks softly"),
    Persona(name="Dan", description="a farmer who is sceptical of new ideas"),
    Persona(name="Zoe", description="a marketing manager who talks fast"),
]

AGENT_PERSONAS = [
    Persona(name="Ava", description="a friendly voice assistant that explains things step by step"),
    Persona(name="Kai", description="a calm helper that gives practical advice"),
    Persona(name="Mia", description="an upbeat assistant that likes examples"),
    Persona(name="Noah", description="a patient tutor that checks understanding"),
    Persona(name="Ivy", description="a concise assistant that gets to the point"),
    Persona(name="Eli", description="a warm companion who asks about feelings"),
    Persona(name="Ruby", description="a well read guide who gives background"),
    Persona(name="Finn", description="a cheerful planner who loves lists of options"),
    Persona(name="Luna", description="a careful adviser who mentions risks"),
    Persona(name="Owen", description="a handy helper who knows tools and repairs"),
    Persona(name="Nora", description="a thoughtful friend who shares stories"),
    Persona(name="Jack", description="a relaxed neighbour who gives honest opinions"),
    Persona(name="Iris", description="a curious friend who asks many questions"),
    Persona(name="Paul", description="an old friend who likes to reminisce"),
    Persona(name="Amy", description="a colleague who is practical and direct"),
    Persona(name="Sara", description="a sister who teases but helps"),
]

STYLES = [
    "casual and friendly", "polite and formal", "hurried", "playful", "thoughtful and slow",
    "enthusiastic", "slightly frustrated", "curious", "reassuring", "matter of fact",
    "warm and chatty", "sceptical",
]


def bank_size(modes: int = len(Mode)) -> int:
    """Distinct scenarios the bank can draw (per turn-count choice)."""
    return len(TOPICS) * len(SETTINGS) * len(USER_PERSONAS) * len(AGENT_PERSONAS) * len(STYLES) * modes


def draw_scenario(
    sample_id: str,
    rng: np.random.Generator,
    mode_weights: dict[Mode, float],
    n_turns: tuple[int, int],
) -> Scenario:
    modes = sorted(mode_weights, key=lambda m: m.value)
    weights = np.array([mode_weights[m] for m in modes], dtype=float)
    mode = modes[int(rng.choice(len(modes), p=weights / weights.sum()))]
    user = USER_PERSONAS[int(rng.integers(len(USER_PERSONAS)))]
    agent = AGENT_PERSONAS[int(rng.integers(len(AGENT_PERSONAS)))]
    return Scenario(
        id=sample_id,
        mode=mode,
        topic=TOPICS[int(rng.integers(len(TOPICS)))],
        setting=SETTINGS[int(rng.integers(len(SETTINGS)))],
        style=STYLES[int(rng.integers(len(STYLES)))],
        user=user,
        agent=agent,
        n_turns=int(rng.integers(n_turns[0], n_turns[1] + 1)),
    )
