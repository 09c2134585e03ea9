#!/usr/bin/env python3
"""Generates expected.json: what the reference implementation, dynamicprompts'
CombinatorialPromptGenerator, makes of every template in corpus.json with the
wildcards in wildcards/. Run once (the Rust test reads the output; cargo test
needs no Python):

    python3 -m venv target/dp-venv
    target/dp-venv/bin/pip install dynamicprompts==0.31.0 pyyaml
    target/dp-venv/bin/python tests/dynamicprompts/gen_expected.py
"""
import json
import pathlib

import dynamicprompts
from dynamicprompts.generators import CombinatorialPromptGenerator
from dynamicprompts.wildcards import WildcardManager

HERE = pathlib.Path(__file__).resolve().parent
# An unknown wildcard yields itself forever: stop there.
CAP = 5000


def main():
    corpus = json.loads((HERE / "corpus.json").read_text(encoding="utf-8"))
    generator = CombinatorialPromptGenerator(WildcardManager(HERE / "wildcards"))
    out = {"dynamicprompts": dynamicprompts.__version__, "expected": {}}
    for case in corpus:
        try:
            prompts = generator.generate(case["template"], max_prompts=CAP)
            entry = {"prompts": sorted(set(prompts)), "capped": len(prompts) >= CAP}
        except Exception as e:  # the reference refuses the template
            entry = {"error": f"{type(e).__name__}: {e}"}
        out["expected"][case["name"]] = entry
    text = json.dumps(out, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    (HERE / "expected.json").write_text(text, encoding="utf-8")
    print(f"{len(corpus)} templates -> {HERE / 'expected.json'}")


if __name__ == "__main__":
    main()
