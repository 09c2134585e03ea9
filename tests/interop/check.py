"""Loads comfy-batch's exports with the real libraries and compares every
row with runs.csv; validates the JUnit XML with junitparser.

Usage: check.py RUN_DIR IMAGEFOLDER_DIR WEBDATASET_DIR JUNIT_XML \
           [CAPTIONED_RUN_DIR ITS_IMAGEFOLDER ITS_WEBDATASET]
(the second run has text outputs: each sample's text is checked against them)
"""

import csv
import glob
import io
import json
import math
import os
import sys

from PIL import Image
from datasets import load_dataset
import webdataset as wds
from junitparser import JUnitXml, Failure, Skipped, Error

KNOWN = {"job_id", "job", "workflow", "workflow_sha256", "seed", "status", "server",
         "prompt_id", "queued_at", "started_at", "finished_at", "queue_s", "run_s",
         "images", "text", "error", "batch_index", "pack_size", "pack_id"}
RESERVED = {"file_name", "image", "audio", "label", "job_id", "job", "seed", "text"}


def fail(message):
    print(f"interop: {message}", file=sys.stderr)
    sys.exit(1)


def same(value, cell):
    """A typed export value against its runs.csv cell."""
    if cell == "":
        return value is None
    if isinstance(value, bool):
        return str(value).lower() == cell
    if isinstance(value, int):
        return str(value) == cell
    if isinstance(value, float):
        return math.isclose(value, float(cell))
    return value == cell


def pixels(image):
    return image.convert("RGBA").tobytes()


def main(run_dir, imagefolder, webdataset_dir, junit):
    with open(os.path.join(run_dir, "runs.csv"), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = list(reader)
    newest = {}
    for row in rows:
        newest[row["job_id"]] = row
    ok = {k: r for k, r in newest.items() if r["status"] == "ok"}
    params = [h for h in header[header.index("seed") + 1:header.index("status")] if h not in KNOWN]
    if not ok:
        fail("no ok job to compare")

    def check_row(where, values, row, prefix_reserved):
        if not same(values["seed"], row["seed"]):
            fail(f"{where}: seed {values['seed']!r} != {row['seed']!r}")
        for name in params:
            column = f"param_{name}" if prefix_reserved and name in RESERVED else name
            if not same(values[column], row[name]):
                fail(f"{where}: {name} {values[column]!r} != {row[name]!r}")

    def original(row):
        pngs = [p for p in row["images"].split(";") if p.endswith(".png")]
        return Image.open(os.path.join(run_dir, pngs[0]))

    # Hugging Face imagefolder.
    ds = load_dataset("imagefolder", data_dir=imagefolder, split="train")
    if len(ds) != len(ok):
        fail(f"imagefolder: {len(ds)} rows, runs.csv has {len(ok)} ok jobs")
    seen = set()
    for example in ds:
        row = ok.get(example["job_id"])
        if row is None:
            fail(f"imagefolder: job {example['job_id']} is not ok in runs.csv")
        seen.add(example["job_id"])
        if example["job"] != row["job"]:
            fail(f"imagefolder: job {example['job']} != {row['job']}")
        check_row(f"imagefolder {row['job']}", example, row, True)
        if pixels(example["image"]) != pixels(original(row)):
            fail(f"imagefolder {row['job']}: image differs from the run's")
    if seen != set(ok):
        fail("imagefolder: not every ok job is there")

    # WebDataset.
    shards = sorted(glob.glob(os.path.join(webdataset_dir, "shard-*.tar")))
    if len(shards) != math.ceil(len(ok) / 5):
        fail(f"webdataset: {len(shards)} shards for {len(ok)} samples of 5")
    seen = set()
    for sample in wds.WebDataset(shards, shardshuffle=False).decode("pil"):
        meta = sample["json"]
        row = ok.get(meta["job_id"])
        if row is None:
            fail(f"webdataset: job {meta['job_id']} is not ok in runs.csv")
        seen.add(meta["job_id"])
        if meta["job"] != row["job"]:
            fail(f"webdataset: job {meta['job']} != {row['job']}")
        check_row(f"webdataset {sample['__key__']}", {"seed": meta["seed"], **meta["params"]}, row, False)
        if sample["txt"] != row["prompt"]:
            fail(f"webdataset {sample['__key__']}: txt {sample['txt']!r} != prompt {row['prompt']!r}")
        if pixels(sample["png"]) != pixels(original(row)):
            fail(f"webdataset {sample['__key__']}: image differs from the run's")
    if seen != set(ok):
        fail("webdataset: not every ok job is there")

    # JUnit.
    xml = JUnitXml.fromfile(junit)
    cases = [case for suite in xml for case in suite]
    if len(cases) != len(newest):
        fail(f"junit: {len(cases)} testcases for {len(newest)} jobs")
    by_kind = {"failure": 0, "skipped": 0, "error": 0}
    for case in cases:
        for result in case.result:
            if isinstance(result, Failure):
                by_kind["failure"] += 1
            elif isinstance(result, Skipped):
                by_kind["skipped"] += 1
            elif isinstance(result, Error):
                by_kind["error"] += 1
        job_id = next(l.split(": ", 1)[1] for l in (case.system_out or "").splitlines() if l.startswith("job_id: "))
        row = newest[job_id]
        if not case.name.startswith(row["job"]):
            fail(f"junit: case {case.name!r} is not {row['job']}")
        failures = [r for r in case.result if isinstance(r, Failure)]
        if row["status"] in ("failed", "rejected", "timeout"):
            if len(failures) != 1 or failures[0].message != row["error"]:
                fail(f"junit: {case.name}: failure {failures!r} != error {row['error']!r}")
        elif failures:
            fail(f"junit: {case.name} is {row['status']} but has a failure")
    statuses = [r["status"] for r in newest.values()]
    expected_failures = sum(s in ("failed", "rejected", "timeout") for s in statuses)
    if by_kind["failure"] != expected_failures or by_kind["error"] != 0:
        fail(f"junit: {by_kind} for statuses {statuses}")
    if by_kind["skipped"] != statuses.count("interrupted"):
        fail(f"junit: {by_kind['skipped']} skipped, {statuses.count('interrupted')} interrupted")

    print(f"interop: ok: {len(ok)} ok jobs of {len(newest)} in imagefolder ({len(ds)} rows) "
          f"and webdataset ({len(shards)} shards); junit {len(cases)} cases, {expected_failures} failures")


def check_captions(run_dir, imagefolder, webdataset_dir):
    """Each sample's text is its job's whole .txt output (not the clipped
    one-line runs.csv cell), in both exports."""
    with open(os.path.join(run_dir, "runs.csv"), newline="", encoding="utf-8") as f:
        newest = {row["job_id"]: row for row in csv.DictReader(f)}
    captions = {}
    for job_id, row in newest.items():
        if row["status"] != "ok":
            continue
        texts = [p for p in row["images"].split(";") if p.endswith(".txt")]
        with open(os.path.join(run_dir, texts[0]), encoding="utf-8") as f:
            captions[job_id] = f.read()
    if not captions:
        fail("captions: no ok job to compare")
    if not any("\n" in c and len(c) > 300 for c in captions.values()):
        fail("captions: no long caption with a newline to compare")
    ds = load_dataset("imagefolder", data_dir=imagefolder, split="train")
    jobs = set()
    for example in ds:
        jobs.add(example["job_id"])
        if example["text"] != captions[example["job_id"]]:
            fail(f"captions: imagefolder text {example['text']!r} != {captions[example['job_id']]!r}")
    if jobs != set(captions):
        fail("captions: imagefolder lacks jobs")
    shards = sorted(glob.glob(os.path.join(webdataset_dir, "shard-*.tar")))
    samples = 0
    for sample in wds.WebDataset(shards, shardshuffle=False):
        samples += 1
        job_id = json.loads(sample["json"])["job_id"]
        if sample["txt"].decode("utf-8") != captions[job_id]:
            fail(f"captions: webdataset {sample['__key__']}: txt differs from the .txt output")
    print(f"interop: ok: captions of {len(captions)} jobs in imagefolder ({len(ds)} rows) "
          f"and webdataset ({samples} samples)")


if __name__ == "__main__":
    main(*sys.argv[1:5])
    if len(sys.argv) > 5:
        check_captions(*sys.argv[5:8])
