"""Book pages generated at build time from the study's own records, so they can
never drift from what the code uses: the data-and-models page (from
``data_manifest.yaml`` and the encoder registry), the list of runs, the
timings the Reproduce page includes (from each executed notebook's
provenance) and the benchmarks appendix (from the benchmark scripts' reports)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from semalign.data.manifest import load_manifest, verify_sources
from semalign.core.paths import work_dir


#: The generated timings that the Reproduce page includes (not a page of its own).
RUN_TIMES_FILE = "run_times.md"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def data_models_page(profile: str) -> str:
    manifest = load_manifest()
    status = {s.name: s for s in verify_sources(profile)}
    rows = []
    for name, entry in manifest["sources"].items():
        counts = ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in (entry.get("counts") or {}).items())
        check = status[name].status if name in status else "not checked (other profile)"
        sha = f"sha256 `{entry['sha256'][:16]}…`" if entry.get("sha256") else ""
        rows.append([
            f"**{entry['title']}**", entry["used_for"], f"`{entry['distribution']}`<br>{entry['licence']}",
            "<br>".join(part for part in (counts, sha, f"check: {check}") if part),
        ])
    text = [
        "(data-models)=",
        "# Data and models\n",
        "This page is generated from `data_manifest.yaml` and the encoder registry when the book is built; "
        f"the *check* column is the result of `semalign data verify --profile {profile}` at build time.\n",
        "## Data sources\n",
        table(["source", "used for", "distribution, licence", "counts, checksum, check"], rows),
    ]
    labels = manifest["sources"]["iu_xray_reports"]["labels"]
    text += [
        "## IU X-ray labels\n",
        "A report carries a label when the head (the part before the first `/`) of one of its MeSH *major* "
        "terms is listed for it. `normal` vs the rest is the binary task; the other labels form the multi-label task.\n",
        table(["label", "MeSH major term heads"], [[f"`{k}`", ", ".join(v)] for k, v in labels.items()]),
    ]
    try:
        from semalign.models.encoders import list_encoders
    except ImportError:
        return "\n".join(text)
    enc_rows = [
        [f"`{s.name}`", f"{s.modality}, {s.domain}", f"`{s.source}`<br>{s.family} loader, {s.pooling} pooling", s.description]
        for s in list_encoders()
    ]
    text += ["## Encoders\n", table(["name", "modality, domain", "weights", "notes"], enc_rows)]
    return "\n".join(text + [study_made_encoders()])


def study_made_encoders() -> str:
    """How each encoder the study trains itself is made, and from which data
    (from the configurations the code trains them with)."""
    from semalign.models.phantom_ssl import SSLConfig
    from semalign.models.radiology_bert import RadiologyBertConfig

    bert, ssl = RadiologyBertConfig(), SSLConfig()
    rows = [
        ["`radiology-bert`", "the medical text encoder of the text and zero-shot experiments",
         f"a BERT built from scratch: WordPiece vocabulary of at most {bert.vocab_size:,} tokens, "
         f"{bert.hidden_size}-d, {bert.layers} layers, {bert.heads} heads (no pretrained weights)",
         f"masked-language modelling, {bert.mlm_steps} steps of {bert.mlm_batch_size} reports; then contrastive "
         f"on (findings, impression) pairs, {bert.contrastive_steps} steps of {bert.contrastive_batch_size}",
         "the training split of the evaluated reports (IU X-ray in the offline profile)"],
        ["`phantom-ssl`", "the medical vision encoder of the vision and zero-shot experiments",
         f"EfficientNet-Lite1 (ImageNet weights, `effnet-lite1`), its last {ssl.train_blocks} blocks trained",
         f"self-supervised (SimCLR's NT-Xent at temperature {ssl.temperature}), {ssl.steps} steps of "
         f"{ssl.batch_size} images, {ssl.views} augmented views each; no labels",
         "the phantom's training images"],
    ]
    return "\n".join([
        "## Encoders the study makes\n",
        "The offline profile's medical encoders are trained by the study itself, from training-split data only "
        "(never a test item), and cached; the step counts are the offline profile's (`medical_scale` scales them: "
        "the smoke profile's are a fiftieth). The code is in `semalign.models.radiology_bert` and `semalign.models.phantom_ssl`, "
        "with what they share in `semalign.models.training`.\n",
        table(["encoder", "role", "made from", "training", "data"], rows),
    ])


def duration(seconds: float) -> str:
    """A wall time as the pages show it: seconds below a minute, else minutes
    (joined to the number by a no-break space, so a table cell never splits them)."""
    return f"{seconds:.0f}\u00a0s" if seconds < 59.5 else f"{seconds / 60:.1f}\u00a0min"


def _executed(run) -> dict:
    """What the runner recorded of where and when ``run`` executed (``{}`` when nothing was recorded)."""
    return run.executed_metadata.get("provenance") or {}


def runs_page(profile: str, runs) -> str:
    rows = []
    for run in runs:
        shown = {k: v for k, v in run.parameters.items() if k not in ("profile", "run_name")}
        params = "<br>".join(f"`{k}={v!r}`" for k, v in shown.items()) or "—"
        facts = _executed(run)
        executed = [facts["started"], duration(facts["wall_s"])] if "wall_s" in facts else ["not recorded", "—"]
        rows.append([f"{{doc}}`experiments/{run.name}`", run.chapter, *executed, params])
    return "\n".join([
        "(runs)=",
        f"# Runs of this book (profile `{profile}`)\n",
        "Every page under *Experiments* is an executed notebook. This table lists when each was executed, "
        "how long it ran and the parameters it was executed with; re-run one with other values with "
        "`semalign run NOTEBOOK --profile PROFILE -p KEY=VALUE` (see {ref}`reproduce`).\n",
        table(["page", "chapter", "executed", "wall time", "parameters"], rows),
    ])


def run_times(profile: str, runs) -> str:
    """How long this book's runs took, summed per chapter, and on which machines:
    the Reproduce page's timings, from each executed notebook's own provenance."""
    timed = [(run, facts) for run in runs if "wall_s" in (facts := _executed(run))]
    if not timed:
        return "No run of this book recorded its execution time.\n"
    chapters: dict[str, list[float]] = {}
    for run, facts in timed:
        chapters.setdefault(run.chapter, []).append(facts["wall_s"])
    rows = [[chapter, str(len(seconds)), duration(sum(seconds))] for chapter, seconds in chapters.items()]
    rows.append(["**all chapters**", str(len(timed)), f"**{duration(sum(f['wall_s'] for _, f in timed))}**"])
    machines = "; ".join(sorted({f"{facts['cpu']}, GPU: {facts['gpu']}" for _, facts in timed}))
    started = sorted(facts["started"] for _, facts in timed)
    when = f"on {started[0]}" if started[0] == started[-1] else f"between {started[0]} and {started[-1]}"
    untimed = len(runs) - len(timed)
    return "\n".join([
        f"The runs of this book (profile `{profile}`) took, by chapter (the wall time each executed notebook "
        "records; {ref}`runs` lists every run's):\n",
        table(["chapter", "runs", "execution time"], rows),
        f"They were executed {when} on {machines}."
        + (f" {untimed} of the {len(runs)} runs recorded no time." if untimed else "")
        + " A run that was up to date at the last `semalign run` keeps the time of its own last execution, and "
        "a run that found its embeddings and study-made encoders in the cache took less than one that made "
        "them, so these are not the times of a run from an empty cache: `python benchmarks/bench_study.py` "
        "measures those ({ref}`benchmarks`).\n",
    ])


def _benchmark_report(name: str) -> dict | None:
    """``<work>/benchmarks/<name>.json`` as written by a benchmark script, or None if there is none."""
    path = work_dir() / "benchmarks" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _report_section(text: list[str], name: str, render: Callable[[dict], list[str]]) -> str:
    """``text``, then ``render`` of ``bench_<name>``'s report; "" when that benchmark has not been run."""
    report = _benchmark_report(name)
    return "" if report is None else "\n".join(text + render(report))


def benchmarks_page() -> str:
    """The appendix: measured speed and memory, and the reliability figures.

    Every section comes from a file a benchmark script writes in the work
    folder, and a section appears only once its script has been run there; a
    work folder with none says so once, with the commands that fill the page.
    (The page itself is always built: other pages refer to it.)
    """
    text = [
        "(benchmarks)=",
        "# Appendix: speed, memory and reliability\n",
        "Measured by the scripts in `benchmarks/`, which print ratios against a reference "
        "measured in the same run. `python benchmarks/bench_study.py` times the whole study from "
        "an empty cache and a warm one, and the book build, and records peak resident memory; "
        "`bench_embed.py`, `bench_scale.py`, `bench_paper_scale.py` and `bench_reliability.py` measure "
        "embedding throughput (against sentence-transformers), embedding at scale, the paper profile on "
        "synthetic data and the study's reliability, and write a report into the work folder's "
        "`benchmarks/` folder, as does `bench_standins.py` (the study-made radiology encoder at longer training "
        "budgets against the general encoders); `bench_align.py` and `bench_phantom.py` (the alignment fits, phantom rendering) "
        "print theirs. A section of this page appears once its script has been run in the work folder the "
        "book is built from.\n",
    ]
    sections = [part for part in (study_section(), embed_section(), scale_section(), paper_scale_section(),
                                  standins_section(), reliability_section()) if part]
    if not sections:
        text.append("None of them has been run in the work folder this book was built from: run "
                    "`python benchmarks/bench_study.py` (and the others above), then `semalign book`.\n")
    return "\n".join(text + sections)


def standins_section() -> str:
    """``<work>/benchmarks/standins.json`` (from ``benchmarks/bench_standins.py``) as a section."""
    def render(report: dict) -> list[str]:
        rows = [[r["encoder"], f"{r['validation']:.3f}", f"{r['test']:.3f}", f"{r['ratio_to_best_general']:.3f}",
                 ("from the cache" if r["build_s"] < 2 else duration(r["build_s"])) if "build_s" in r else "—"]
                for r in report["rows"]]
        return [f"Measured on {report['date']} on {report['machine']}: each encoder with its own decoder on the IU "
                "reports (the offline profile's split); the ratio is the chance-corrected validation score over "
                "the best general encoder's (above 1: the stand-in knows the task better).\n",
                table(["encoder", "validation macro-AUROC", "test macro-AUROC", "ratio to the best general",
                       "build and embed"], rows)]

    return _report_section(["## Does training longer make the medical stand-in an expert?\n"], "standins", render)


def study_section() -> str:
    """``<work>/benchmarks/study.json`` (from ``benchmarks/bench_study.py``) as a section."""
    def render(report: dict) -> list[str]:
        targets = report["targets"]
        rows = []
        for stage, key, label in (("cold", "cold_s", "study, empty cache"), ("warm", "warm_s", "study, warm cache"),
                                  ("book", "book_s", "book build")):
            if stage in report:
                m = report[stage]
                rows.append([label, f"{m['wall_s']:.0f} s", f"{targets[key]} s", f"{m['peak_rss_gb']:.2f} GB",
                             f"{targets['peak_rss_gb']} GB"])
        out = [f"Profile `{report['profile']}` on {report['machine']}.\n",
               table(["stage", "wall time", "target", "peak RSS", "target"], rows)]
        if report.get("cold_chapters_s"):
            out += ["From the empty cache, each chapter's runs took (papermill's execution times, summed; "
                    "the work a chapter caches first, such as embeddings, is counted where it happens):\n",
                    table(["chapter", "execution time"],
                          [[chapter, duration(seconds)] for chapter, seconds in report["cold_chapters_s"].items()])]
        return out

    return _report_section(["## Speed and memory\n"], "study", render)


def embed_verdict(row: dict) -> str:
    """A ``bench_embed`` row's verdict: ``met``, ``not met`` (with why, where the
    bf16 cosine target is below the row's floor), or empty for an unjudged row."""
    met = row.get("target_met")
    if met is None:
        return ""
    if met:
        return "met"
    return "not met (cosine: floor below target)" if row.get("cosine_reachable") is False else "not met"


def embed_section() -> str:
    """``<work>/benchmarks/embed.json`` (from ``benchmarks/bench_embed.py``) as a section."""
    text = ["## Embedding throughput\n",
            "`python benchmarks/bench_embed.py` times our extraction against a reference in the same process: "
            "sentence-transformers' `encode()` on the same model and IU X-ray reports, and a plain fp32 "
            "per-batch forward for images (also shown at our batch size, without a target, to separate "
            "what batching alone gives). Each method is timed in interleaved rounds and its best round is "
            "kept. Targets: fp32 at least as fast as the reference with the same embeddings (max |Δ| ≤ 1e-5); "
            "bf16 at least 2.5× the fp32 reference with cosine ≥ 0.999 to it.\n",
            "A bf16 row's *floor* is the lowest cosine of the reference model itself with every weight rounded "
            "to bfloat16 and everything computed in fp32: what storing the weights in bf16 costs before any "
            "bf16 arithmetic. Where the floor is below 0.999, no path that keeps every weight in bf16 can meet "
            "the cosine target, ours included; keeping some weights in fp32 is the way, at a cost in speed "
            "({ref}`precision` has the measurements), and `precision=fp32` is exact.\n"]

    def render(r: dict) -> list[str]:
        gpu = r.get("device", "cpu") != "cpu"
        rows = [[row["workload"], row["method"], f"{row['throughput']:.1f} {row['unit']}", f"{row['ratio']:.2f}×",
                 row["check"]] + ([] if gpu else [embed_verdict(row).replace("not met", "**not met**")])
                for row in r["rows"]]
        head = ["workload", "method", "throughput", "× reference", "agreement"] + ([] if gpu else ["target"])
        return [f"Run on {r['date']} on {r['machine']} ({r['threads']} threads, torch {r['torch']}, best of "
                f"{r['rounds']} rounds, load average {r['load_average'][0]} at the start) with "
                f"`{r['command'].strip()}`:\n", table(head, rows)]

    cpu, gpu = _benchmark_report("embed"), _benchmark_report("embed-cuda")
    if cpu is None and gpu is None:
        return ""
    if cpu is not None:
        text += render(cpu)
    if gpu is not None:
        text += ["### On a GPU\n",
                 "Every method on the GPU, the references too (TF32 off). The targets above are the CPU's, so "
                 "these rows carry none; *agreement* adds each of our rows' distance to our CPU embeddings at "
                 "the same precision (fp32 caches are shared between devices, bf16 ones are not).\n",
                 *render(gpu)]
    return "\n".join(text)


def scale_section() -> str:
    """``<work>/benchmarks/scale.json`` (from ``benchmarks/bench_scale.py``) as a section."""
    text = ["## Embedding at scale\n",
            "`python benchmarks/bench_scale.py` streams 50,000 short texts through the embedding cache in "
            "shards and samples resident memory; the ratios compare the last shards with the first, in the "
            "same run.\n"]
    def render(r: dict) -> list[str]:
        rows = [
            ["texts, encoder, precision", f"{r['n_texts']:,}, `{r['model']}`, {r['precision']}"],
            ["throughput", f"{r['items_per_s']} texts/s (last quarter / first quarter: "
                           f"{r['throughput_ratio_last_vs_first']}×)"],
            ["resident memory", f"{r['rss_after_first_shard_mb']} MB after the first shard, {r['rss_peak_mb']} MB "
                                f"peak ({r['rss_growth_ratio']}×); the returned array alone is "
                                f"{r['returned_array_mb']} MB"],
        ]
        return [table(["", "measured"], rows)]

    return _report_section(text, "scale", render)


def paper_scale_section() -> str:
    """``<work>/benchmarks/paper-scale-<scale>.json`` (from ``benchmarks/bench_paper_scale.py``), each scale found."""
    text = ["## The paper profile at scale\n",
            "`python benchmarks/bench_paper_scale.py --scale small` (or `full`, on a GPU machine) writes synthetic "
            "MIMIC-CXR and RSNA files in their real layouts, builds encoders with the paper models' architectures "
            "(random weights) and runs `semalign embed` and the stitching notebooks of the paper profile on them. "
            "Each rate is set against limits measured in the same run: the study's image loader on every core "
            "with nothing else running, and each encoder's bare forward on pre-decoded, pre-tokenised tensors. "
            "The target is at least half of the limit.\n"]
    found = [(scale, r) for scale in ("tiny", "small", "full") if (r := _benchmark_report(f"paper-scale-{scale}"))]
    if not found:
        return ""
    for scale, r in found:
        m, d, rates = r["machine"], r["data"], r["rates"]
        text += [f"Scale `{scale}`, {r['date']}, {m['cpus']} CPU cores, {m['gpu'] or 'no GPU'} ({m['precision']}); "
                 f"{d['reports']:,} reports, {d['rsna_dicoms']:,} DICOMs and {d['mimic_jpegs']:,} JPEGs of "
                 f"{d['image_pixels'][0]:,} × {d['image_pixels'][1]:,} pixels; encoders read "
                 f"{r['image_size']} pixels.\n",
                 table(["stage", "through the study", "limit", "ratio (target ≥ 0.5)"], [
                     ["text embedding, every encoder", f"{rates['embed_text_per_s']:,} reports/s",
                      f"{rates['text_forward_limit_per_s']:,} reports/s (bare forward)",
                      f"{r['ratios']['embed_text_vs_forward']}"],
                     ["image embedding, every encoder", f"{rates['embed_vision_per_s']:,} images/s",
                      f"{rates['vision_limit_per_s']:,} images/s (lower of forward and DICOM decode, "
                      f"{r['limits']['decode_dicom']['per_s']:,}/s)", f"{r['ratios']['embed_vision_vs_limit']}"]]),
                 _stage_table(r),
                 "Peak resident memory of `semalign embed` (2-layer models, so the pipeline's own memory shows) "
                 "as the images grow: " + ", ".join(f"{c['images']:,} images {c['peak_rss_gb']} GB"
                                                     for c in r["memory_curve"]) + ".\n"]
    return "\n".join(text)


def _stage_table(report: dict) -> str:
    """Wall time and peak memory per stage; GPU utilisation and memory where a GPU was sampled;
    what the sweeps ran (older reports name none)."""
    stages = report["stages"]
    gpu = any("gpu_util_pct" in st for st in stages.values())
    header = ["stage", "wall time", "peak resident memory"] + (["GPU utilisation", "peak GPU memory"] if gpu else [])
    rows = [[name, f"{st['wall_s']} s", f"{st['peak_rss_gb']} GB"]
            + ([f"{st.get('gpu_util_pct', '–')} %", f"{st.get('gpu_peak_gb', '–')} GB"] if gpu else [])
            for name, st in stages.items()]
    sweep = report.get("sweep")
    note = "" if not sweep else (
        f"The sweeps ran the `{sweep['transform']}` transform at {sweep['text_anchor_counts']} anchors on "
        f"{sweep['text_reports']:,} reports and at {sweep['vision_anchor_counts']} anchors on the images.\n")
    return table(header, rows) + ("\n" + note if note else "")


def reliability_section() -> str:
    """``<work>/benchmarks/reliability.json`` (from ``benchmarks/bench_reliability.py``) as a section."""
    text = [
        "## Reliability\n",
        "`python benchmarks/bench_reliability.py` runs the bad-input catalogue (`tests/test_bad_inputs.py`), "
        "the interruption and cache-integrity tests (`tests/test_interrupt.py`), the determinism tests "
        "(`tests/test_determinism.py`), the parameter checks (`tests/test_parameters.py`), the re-run "
        "safeguards (in `tests/test_runner.py` and `tests/test_embed.py`) and, on a smoke study, the stale-book and "
        "machine-path checks and the publish rehearsal (in `tests/test_study_smoke.py`), slow ones included, and "
        "records what they tried and what passed. "
        "A bad input passes when it is refused with one line naming the input and the fix (on the command "
        "line: exit status 2, no traceback); an interruption is survived when a run killed with SIGKILL, "
        "re-run, gives the uninterrupted result and leaves no torn or temporary file.\n",
    ]
    report = _benchmark_report("reliability")
    if report is None:
        return ""
    parts = (("bad_inputs", "bad inputs refused with a one-line error naming the input and the fix"),
             ("interruptions", "runs killed with SIGKILL, then completed with the uninterrupted result"),
             ("cache_damage", "damaged cache entries detected, reported and recomputed"),
             ("determinism", "determinism checks (identical bytes or numbers from fresh processes)"),
             ("reruns", "re-runs with other data or settings kept apart, made stale or refused, never mixed"),
             ("shareable", "outputs a user shares (records, executed notebooks, the book) searched for a path "
                           "of the machine, and published"))
    rows = []
    for key, label in parts:
        part = report.get(key)
        if part is None:  # recorded before this check existed
            continue
        not_run = f" ({part['not_run']} not run)" if part.get("not_run") else ""
        rows.append([label, f"{part['tried']}{not_run}", str(part["passed"])])
    tests = report["tests"]
    status = "all passed" if report["pytest_exit_status"] == 0 and not tests["failed"] else \
        f"**{tests['failed']} failed**"
    text += [
        f"Run on {report['date']} on {report['machine']} with `{report['command']}`: "
        f"{tests['passed']} tests passed, {tests['failed']} failed, {tests['skipped']} skipped ({status}) "
        f"in {report['wall_s']:.0f} s.\n",
        table(["check", "tried", "passed"], rows),
        "### Bad-input catalogue\n",
        table(["input", "test", "result"],
               [[c["what"], f"`{c['test']}`", c["outcome"]] for c in report["bad_inputs"]["cases"]]),
    ]
    for key, title, column in (("reruns", "Re-runs", "safeguard"), ("shareable", "Outputs a user shares", "check")):
        if report.get(key, {}).get("cases"):
            text += [f"### {title}\n", table([column, "test", "result"],
                                             [[c["what"], f"`{c['test']}`", c["outcome"]] for c in report[key]["cases"]])]
    return "\n".join(text)


def write_generated_pages(src: Path, profile: str, runs) -> None:
    (src / "data_models.md").write_text(data_models_page(profile))
    (src / "runs.md").write_text(runs_page(profile, runs))
    (src / RUN_TIMES_FILE).write_text(run_times(profile, runs))  # included by reproduce.md
    (src / "benchmarks.md").write_text(benchmarks_page())
