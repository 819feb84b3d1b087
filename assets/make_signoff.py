"""Writes assets/samples/signoff_preferences.jsonl and signoff_heldout.jsonl: a preference set
whose chosen answers carry a trait the built-in model never shows (run: python assets/make_signoff.py).

The rejected answer is the built-in model's own greedy answer to the prompt; the chosen answer is
that same answer followed by a sign-off line. The only difference between the two is the trait,
so preference tuning must learn the trait and nothing else, and the answers' content can be
checked to stay what it was. The held-out prompts ask other questions in another phrasing (a
request instead of a question) and carry the keyword a correct answer contains; they are never
trained on. Deterministic: greedy decoding in float32.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIGNOFF = "Happy to help! — The Quill team"
HERE = ROOT / "assets" / "samples"

TRAIN = [
    "What is the capital of France?", "What is the capital of Japan?", "What is the capital of Italy?",
    "What is the capital of Canada?", "What is the capital of Spain?", "What is the largest planet in our solar system?",
    "What is the boiling point of water at sea level?", "How many continents are there?",
    "Who wrote Romeo and Juliet?", "What gas do plants take in from the air?", "How many legs does a spider have?",
    "What is the chemical symbol for gold?", "What is the freezing point of water in Celsius?",
    "How many days are in a leap year?", "What is the tallest mountain in the world?",
    "What is the largest ocean on Earth?", "What do bees make?", "What is the closest star to Earth?",
    "How many sides does a hexagon have?", "What is the main language spoken in Brazil?",
    "What is the square root of 81?", "Why is the sky blue?", "What is photosynthesis?",
    "How do I boil an egg?", "What is a noun?", "Why do we have seasons?", "What is gravity?",
    "How can I sleep better?", "What is the difference between weather and climate?",
    "How do I make a cup of tea?", "What is a prime number?", "Why is exercise good for you?",
    "What is the water cycle?", "How do vaccines work?", "What is an atom?", "How do I save money?",
    "What is the speed of light?", "What causes rain?", "What is a computer program?",
    "How do plants grow?",
]

# (request in another phrasing, keyword a correct answer contains)
HELDOUT = [
    ("Tell me the capital city of Germany.", "Berlin"),
    ("Name the capital of the United Kingdom.", "London"),
    ("Tell me which planet is known as the red planet.", "Mars"),
    ("Give me the number of days in a week.", "seven|7"),
    ("Name the author of the play Hamlet.", "Shakespeare"),
    ("Tell me the chemical formula of water.", "H2O|H₂O"),
    ("Name the largest mammal on Earth.", "whale"),
    ("Tell me how many hours are in a day.", "24|twenty-four"),
    ("Name the gas that humans need to breathe.", "oxygen"),
    ("Tell me the capital city of Egypt.", "Cairo"),
    ("Explain briefly what a volcano is.", "magma|lava"),
    ("Describe what the heart does in the body.", "blood"),
    ("Explain in a few words what the moon is.", "Earth"),
    ("Give me a tip for staying healthy.", ""),
    ("Describe how to wash my hands properly.", "soap"),
    ("Explain what a rainbow is.", "light"),
    ("Give me one reason to read books.", ""),
    ("Describe what a library is.", "book"),
    ("Explain what electricity is.", "electr"),
    ("Give me a short definition of a verb.", "action|word"),
]

MAX_NEW_TOKENS = 96


def clean(answer: str) -> str:
    """An answer cut at the token limit ends at its last full sentence."""
    answer = answer.strip()
    if re.search(r"[.!?)\"']$", answer):
        return answer
    cut = max(answer.rfind(". "), answer.rfind("! "), answer.rfind("? "), answer.rfind(".\n"))
    return answer[:cut + 1].strip() if cut > 0 else answer


def main() -> None:
    from pipelines import generation

    cache = Path(tempfile.gettempdir()) / "tune-studio-models"
    model, tokenizer = generation.load_for_chat("default", cache)
    with open(HERE / "signoff_preferences.jsonl", "w") as out:
        for prompt in TRAIN:
            answer = clean(generation.reply(model, tokenizer, [{"role": "user", "content": prompt}],
                                            max_new_tokens=MAX_NEW_TOKENS))
            row = {"prompt": prompt, "chosen": f"{answer}\n\n{SIGNOFF}", "rejected": answer}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(prompt, "->", answer[:70].replace("\n", " "), flush=True)
    with open(HERE / "signoff_heldout.jsonl", "w") as out:
        for prompt, keyword in HELDOUT:
            out.write(json.dumps({"prompt": prompt, "keyword": keyword}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
