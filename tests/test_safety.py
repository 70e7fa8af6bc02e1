"""§6: target features, coverage, verification of synthetic candidates, the chat-endpoint client, the
WildJailbreak loader on a fixture Dataset, the downstream classifier, and notebook 05 on the smoke profile."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from conftest_sources import dataset_hub  # noqa: F401
import scipy.sparse as sp
import torch

from qscope_utils import safety as S
from qscope_utils import synthesis as Y
from qscope_utils.sae import TopKSAE

from conftest import make_sae_state

try:  # the session fixture of the mini-scope tests
    from conftest_mini import smoke_scope  # noqa: F401
except ImportError:  # pragma: no cover
    pass


def _csr(rows: list[dict[int, float]], d: int = 10) -> sp.csr_matrix:
    M = np.zeros((len(rows), d), dtype=np.float32)
    for i, r in enumerate(rows):
        for f, v in r.items():
            M[i, f] = v
    return sp.csr_matrix(M)


# ----------------------------------------------------------------------------- targets and coverage

def test_relevance_and_target_selection_known_answer():
    # feature 1 fires on every unsafe text and no safe one; 2 on both; 3 only on safe; 4 on 1/4 unsafe
    unsafe = _csr([{1: 1.0, 2: 0.5}, {1: 2.0, 2: 0.1}, {1: 0.3, 4: 1.0}, {1: 0.2}])
    safe = _csr([{2: 1.0, 3: 1.0}, {2: 1.0}, {3: 0.4}, {2: 0.2}])
    rel = S.relevance_scores(unsafe, safe, "delta")
    assert rel["score"][1] == pytest.approx(1.0) and rel["score"][3] == pytest.approx(-0.5)
    assert rel["score"][2] == pytest.approx(-0.25) and rel["score"][4] == pytest.approx(0.25)
    T = S.select_targets(rel, tau=0.2, layer=0)
    assert list(T.ids) == [1, 4]
    assert list(S.select_targets(rel, tau=0.2, layer=0, min_unsafe_rate=0.5).ids) == [1]
    lo = S.relevance_scores(unsafe, safe, "logodds")
    assert lo["score"][1] > lo["score"][4] > 0 > lo["score"][3]
    with pytest.raises(ValueError, match="delta"):
        S.relevance_scores(unsafe, safe, "nope")


def test_coverage_missing_and_curve_on_synthetic_activations():
    T = [1, 4, 7, 9]
    seed = _csr([{1: 1.0}, {2: 3.0}, {4: 0.0}])          # 4 has max activation 0: does not fire (eps = 0)
    assert list(S.feature_coverage(seed, T)) == [True, False, False, False]
    assert S.coverage(seed, T) == pytest.approx(0.25)
    assert list(S.missing_targets(seed, T)) == [4, 7, 9]
    assert S.coverage(seed, T, eps=2.0) == 0.0
    added = _csr([{5: 1.0}, {7: 0.5}, {4: 1.0, 9: 1.0}])
    curve = S.coverage_curve(seed, added, T, [0, 1, 2, 3, 5])
    assert np.allclose(curve[:4], [0.25, 0.25, 0.5, 1.0]) and np.isnan(curve[4])
    assert np.allclose(S.coverage_curve(None, added, [4, 7, 9], [0, 3]), [0.0, 1.0])
    assert np.isnan(S.coverage(seed, []))


def test_pool_rare_target_set_known_answer():
    # relevance (delta): f1 = 1.0 (every unsafe text), f5 = 0.5 (2/4 unsafe), f4 = 0.25 (1/4 unsafe)
    unsafe = _csr([{1: 1.0, 5: 1.0}, {1: 2.0, 5: 0.3}, {1: 0.3, 4: 1.0}, {1: 0.2}])
    safe = _csr([{2: 1.0}, {2: 1.0}, {3: 0.4}, {2: 0.2}])
    # natural pool of 10 texts: f1 fires on 5 (common), f5 on 1 (rate 0.1), f4 never; f2 on 3
    pool = _csr([{1: 0.5}] * 5 + [{5: 1.0}] + [{2: 1.0}] * 3 + [{}])
    assert np.allclose(S.pool_rates(pool)[[1, 2, 4, 5]], [0.5, 0.3, 0.0, 0.1])
    # r_max for a budget of B draws: a feature at that rate is hit with probability exactly 1/2
    assert S.pool_rare_threshold(10) == pytest.approx(0.0669670, abs=1e-6)
    assert 1 - (1 - S.pool_rare_threshold(40)) ** 40 == pytest.approx(0.5)
    texts = {f"u{i}": unsafe[i] for i in range(4)} | {f"s{i}": safe[i] for i in range(4)}
    encode = lambda ts: sp.vstack([texts[t] for t in ts]).tocsr()
    disc = [S.LabelledText(f"u{i}", S.UNSAFE) for i in range(4)] + [S.LabelledText(f"s{i}", S.SAFE) for i in range(4)]
    base = dict(score="delta", tau=0.2, min_unsafe_rate=0.0, layer=0, budget=10, fire_quantile=None)
    T_old, _, _ = S.discover_targets(encode, disc, S.SafetyConfig(target_set="relevant", **base))
    assert list(T_old.ids) == [1, 5, 4] and T_old.rate_pool is None
    T, _, rel = S.discover_targets(encode, disc, S.SafetyConfig(**base), pool_max_acts=pool)   # default pool_rare
    assert list(T.ids) == [4] and list(T.rate_pool) == [0.0] and rel["rate_pool"][1] == 0.5
    T2, _, _ = S.discover_targets(encode, disc, S.SafetyConfig(max_pool_rate=0.1, **base), pool_max_acts=pool)
    assert list(T2.ids) == [5, 4] and np.allclose(T2.rate_pool, [0.1, 0.0]) and "rate_pool" in T2.table()
    T3, _, _ = S.discover_targets(encode, disc, S.SafetyConfig(max_pool_rate=0.5, max_targets=2, **base),
                                  pool_max_acts=pool)
    assert list(T3.ids) == [1, 5]
    # coverage firing above each feature's discovery median: f1's maxima [1, 2, .3, .2] -> 0.65, so the pool's
    # 0.5s no longer fire it (pool rate 0, now a target); f5 [1, .3] -> 0.65, the pool's 1.0 still fires it
    T4, _, rel4 = S.discover_targets(encode, disc, S.SafetyConfig(**{**base, "fire_quantile": 0.5}), pool_max_acts=pool)
    assert rel4["fire_threshold"][[1, 4, 5]] == pytest.approx([0.65, 1.0, 0.65]) and list(T4.ids) == [1, 4]
    with pytest.raises(ValueError, match="pool_max_acts"):
        S.discover_targets(encode, disc, S.SafetyConfig(**base))
    with pytest.raises(ValueError, match="target_set"):
        S.SafetyConfig(target_set="rare")
    with pytest.raises(ValueError, match="max_pool_rate"):
        S.SafetyConfig(max_pool_rate=2.0)
    assert "max_pool_rate" in S.empty_miss_reason(0, 0, 4, S.SafetyConfig(**base))


def test_per_feature_firing_thresholds_known_answer():
    M = _csr([{0: 1.0}, {0: 2.0}, {0: 3.0}, {0: 4.0}, {1: 0.5}], d=3)
    thr = S.firing_thresholds(M, 0.5)
    assert thr[0] == pytest.approx(2.5) and thr[1] == pytest.approx(0.5) and np.isinf(thr[2])
    assert S.firing_thresholds(M, None, 0.1) == 0.1
    assert S.fired(M, thr).toarray().tolist() == [[False] * 3] * 2 + [[True, False, False]] * 2 + [[False] * 3]
    assert list(Y.verify(M, 0, thr)) == [False, False, True, True, False] and Y.verify(M, 1, 0.0)[4]
    assert list(S.missing_targets(M, [0, 1, 2], thr)) == [1, 2]
    with pytest.raises(ValueError, match="per-feature thresholds"):
        S.fired(M, np.zeros(2))
    with pytest.raises(ValueError, match="fire_quantile"):
        S.SafetyConfig(fire_quantile=1.0)


def test_matched_budget_holds_a_short_method_and_paired_counts():
    added = _csr([{7: 0.5}, {4: 1.0}])                       # a method that made only 2 examples
    assert np.isnan(S.coverage_curve(None, added, [4, 7, 9], [5])[0])
    assert np.allclose(S.coverage_curve(None, added, [4, 7, 9], [1, 2, 5], hold=True), [1 / 3, 2 / 3, 2 / 3])
    pc = S.paired_coverage(np.array([1, 1, 1, 0, 0], bool), np.array([1, 0, 0, 0, 1], bool))
    assert {k: pc[k] for k in ("both", "a_only", "b_only", "neither", "n")} == \
        {"both": 1, "a_only": 2, "b_only": 1, "neither": 1, "n": 5}
    assert pc["mcnemar_p"] == pytest.approx(1.0)
    assert S.paired_coverage(np.ones(8, bool), np.zeros(8, bool))["mcnemar_p"] == pytest.approx(2 * 0.5 ** 8)
    assert S.paired_coverage(np.ones(3, bool), np.ones(3, bool))["mcnemar_p"] == 1.0
    with pytest.raises(ValueError, match="same targets"):
        S.paired_coverage(np.ones(3, bool), np.ones(2, bool))
    pool = [f"t{i}" for i in range(20)]
    assert Y.natural_sampling(pool, 5, seed=3) == [pool[i] for i in Y.natural_sample_index(20, 5, seed=3)]


# ----------------------------------------------------------------------------- verification

class FixedGenerator:
    """Returns preset candidates in order (a fake backend for the synthesis loop)."""

    name, supports_steering = "fixed", True

    def __init__(self, outputs):
        self.outputs, self.requests = list(outputs), []

    def generate(self, req):
        self.requests.append(req)
        out, self.outputs = self.outputs[:req.n], self.outputs[req.n:]
        return out


def _keyword_encoder(d: int = 10):
    """texts -> CSR: feature i fires (activation 1) iff the text contains the word f'feat{i}'."""
    def encode(texts):
        return _csr([{i: 1.0 for i in range(d) if f"feat{i}" in t} for t in texts], d)
    return encode


def test_verification_rejects_a_candidate_that_does_not_fire():
    assert list(Y.verify(_csr([{3: 0.7}, {2: 5.0}, {3: 0.0}]), 3)) == [True, False, False]
    gen = FixedGenerator(["a text with feat3 inside it", "a fluent text about nothing at all",
                          "another sentence, this one mentions feat5 only"])
    res = Y.feature_synthesis(gen, _keyword_encoder(), [3], {3: ["example about feat3 here"]}, budget=10,
                              per_feature=5, n_candidates=3, alphas=[2.0], progress=False)
    assert res.texts == ["a text with feat3 inside it"] and res.targets == [3]
    assert res.n_generated == 3 and res.log[0]["fired"] == 1
    assert gen.requests[0].feature == 3 and gen.requests[0].alpha == 2.0
    assert S.coverage(res.max_acts, [3]) == 1.0


def test_copies_and_degenerate_candidates_are_rejected_even_if_they_fire():
    ctx = ["the original top-activating example with feat3 in it"]
    gen = FixedGenerator([ctx[0], "feat3 feat3 feat3 feat3 feat3 feat3 feat3", "fresh words, then feat3, then more"])
    res = Y.feature_synthesis(gen, _keyword_encoder(), [3], {3: ctx}, budget=5, n_candidates=3, progress=False)
    assert res.texts == ["fresh words, then feat3, then more"]
    assert res.log[0]["copy"] == 1 and res.log[0]["degenerate"] == 1
    assert Y.copy_share(ctx[0], ctx) == 1.0 and Y.copy_share("zzzz unrelated qqqq text", ctx) == 0.0


class ByFeatureGenerator(FixedGenerator):
    """Feature f gets candidates naming f (a firing one, then a fresh one each call); feature 3 never fires."""

    def generate(self, req):
        self.requests.append(req)
        k = sum(r.feature == req.feature for r in self.requests)
        word = "nothing" if req.feature == 3 else f"feat{req.feature}"
        return [f"call {k} cand {j} {word}" for j in range(req.n)]


def test_round_robin_order_and_budget_and_hopeless_features():
    gen = ByFeatureGenerator([])
    res = Y.feature_synthesis(gen, _keyword_encoder(), [1, 2, 3], {1: ["p"], 2: ["q"], 3: ["r"]}, budget=10,
                              per_feature=2, n_candidates=1, alphas=[0.0], n_rounds=4, progress=False)
    assert res.targets == [1, 2, 1, 2]                    # one per feature first, then the second ones
    assert sum(r.feature == 3 for r in gen.requests) == 1  # silent for a whole alpha cycle: given up
    assert sum(r.feature == 1 for r in gen.requests) == 2  # stopped at per_feature
    res = Y.feature_synthesis(ByFeatureGenerator([]), _keyword_encoder(), [1, 2], {1: ["p"], 2: ["q"]}, budget=3,
                              per_feature=5, n_candidates=1, alphas=[0.0], n_rounds=5, progress=False)
    assert res.targets == [1, 2, 1] and len(res.texts) == 3 == res.max_acts.shape[0]


def test_local_generator_steers_and_kept_candidates_fire(tiny_model):
    model, tok = tiny_model
    sae = TopKSAE.from_state_dict(make_sae_state(32, 1024, 0), k=8)
    layer = 1
    encode = S.max_act_encoder(model, tok, sae, layer, batch_size=8, max_length=32)
    gen = Y.LocalGenerator(model, tok, sae, layer, max_new_tokens=12)
    req = Y.GenRequest(["The quick brown fox jumps.", "Sparse autoencoders find features."], n=4, seed=1)
    plain = gen.generate(req)
    steered = gen.generate(Y.GenRequest(req.examples, n=4, feature=7, alpha=50.0, seed=1))
    assert len(plain) == 4 and plain != steered          # same seed: the steering changed the samples
    greedy = Y.LocalGenerator(model, tok, sae, layer, max_new_tokens=8, temperature=1e-4)
    a = Y.GenRequest(req.examples, n=2, seed=3)
    b = Y.GenRequest(req.examples, n=2, feature=7, alpha=50.0, seed=3)
    both = greedy.generate_many([a, b])
    assert both[0] == greedy.generate(a)                 # steering one request's rows leaves the others alone
    assert both[1] == greedy.generate(b) and both[1] != both[0]
    M = encode(plain + steered)
    counts = np.bincount(M.indices, minlength=1024)
    feats = [int(f) for f in np.argsort(-counts, kind="stable")[:3]]     # the features these samples fire most
    res = Y.feature_synthesis(gen, encode, feats, {f: req.examples for f in feats}, budget=6, n_candidates=4,
                              alphas=[0.0, 20.0], max_copy=1.0, progress=False)
    assert res.texts and len(res.texts) == len(res.targets) == res.max_acts.shape[0]
    again = encode(res.texts)     # every kept candidate really fires its target when re-encoded by the plain model
    assert all(again[i, f] > 0 for i, f in enumerate(res.targets))
    assert set(res.targets) <= set(feats) and res.n_generated >= len(res.texts)


# ----------------------------------------------------------------------------- chat endpoint

class _Handler(BaseHTTPRequestHandler):
    seen: list = []
    fail_first: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])).decode())
        _Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if _Handler.fail_first:
            code = _Handler.fail_first.pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"error": "nope"}')
            return
        text = f"synthetic text {len(_Handler.seen)} about {body['messages'][-1]['content'][:10]}"
        out = json.dumps({"id": "x", "object": "chat.completion",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *a):
        pass


@pytest.fixture()
def chat_server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.seen, _Handler.fail_first = [], []
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_chat_endpoint_client_against_local_server(chat_server):
    gen = Y.ChatEndpointGenerator(chat_server, "gpt-4", api_key="sk-test", temperature=0.7, backoff=0.01)
    out = gen.generate(Y.GenRequest(["Example one.", "Example two."], n=2, feature=5, alpha=3.0,
                                    description="insults", seed=10))
    assert len(out) == 2 and out[0].startswith("synthetic text")
    first = min(_Handler.seen, key=lambda r: r["body"]["seed"])    # requests run concurrently
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    b = first["body"]
    assert b["model"] == "gpt-4" and b["temperature"] == 0.7 and b["seed"] == 10
    assert [m["role"] for m in b["messages"]] == ["system", "user"]
    assert "Example two." in b["messages"][1]["content"] and "insults" in b["messages"][1]["content"]


def test_chat_endpoint_retries_then_reports_auth_errors(chat_server):
    gen = Y.ChatEndpointGenerator(chat_server + "/chat/completions", "m", api_key="k", backoff=0.01)
    _Handler.fail_first = [503]
    assert gen.generate(Y.GenRequest(["e"], n=1))[0].startswith("synthetic")
    assert len(_Handler.seen) == 2 and _Handler.seen[1]["path"] == "/v1/chat/completions"
    _Handler.fail_first = [401]
    with pytest.raises(RuntimeError, match="API key"):
        gen.generate(Y.GenRequest(["e"], n=1))
    with pytest.raises(ValueError, match="http"):
        Y.ChatEndpointGenerator("api.openai.com", "m")


def test_chat_endpoint_in_the_synthesis_loop(chat_server):
    gen = Y.ChatEndpointGenerator(chat_server, "m", api_key="k")
    enc = lambda texts: _csr([{2: 1.0} if "synthetic text 2 " in t else {} for t in texts], 4)  # noqa: E731
    res = Y.feature_synthesis(gen, enc, [2], {2: ["seed example"]}, budget=4, n_candidates=3, progress=False)
    assert len(res.texts) == 1 and "synthetic text 2 " in res.texts[0]


# ----------------------------------------------------------------------------- data and classifier

def test_wildjailbreak_loader_reads_the_hub_layout(dataset_hub):
    dataset_hub(["wildjailbreak-train", "wildjailbreak-eval"], n_rows=8)
    train = S.load_wildjailbreak("train")
    # 8 rows cycling vanilla_harmful, vanilla_benign, adversarial_harmful, adversarial_benign
    assert [x.label for x in train] == [S.UNSAFE, S.SAFE] * 4
    assert [x.group for x in train[:4]] == ["vanilla_harmful", "vanilla_benign", "adversarial_harmful",
                                            "adversarial_benign"]
    assert train[0].text.startswith("How do I pick a lock")                 # empty adversarial -> vanilla
    assert train[2].text.startswith("You are a novelist")
    ev = S.load_wildjailbreak("eval", text_column="adversarial", fallback_text_column=None, label_column="label")
    assert [x.label for x in ev] == [S.UNSAFE, S.SAFE] * 4
    assert len(S.load_wildjailbreak("train", n=3, seed=1)) == 3
    with pytest.raises(ValueError, match="configs"):
        S.load_wildjailbreak("test")
    with pytest.raises(KeyError, match="columns"):
        S.labelled_from_dataset({"adversarial": ["a"], "label": [1]}, "prompt", "label", (1,))


def test_paper_natural_pool_is_first_user_turns(dataset_hub):
    from qscope_utils.texts import load_hf_texts

    dataset_hub(["wildchat"], n_rows=6)
    cfg = S.SafetyConfig.for_profile("paper")
    pool = load_hf_texts(cfg.natural_dataset_id, column=cfg.natural_column, n=cfg.natural_pool_max, seed=cfg.seed)
    assert len(pool) == 6 and all(isinstance(t, str) for t in pool) and "Explain quicksort in simple terms. (3)" in pool


def test_classifier_learns_a_separable_task_and_arms_label_synthetic_unsafe():
    rng = np.random.default_rng(0)
    words_u, words_s = ["idiota", "maledetto", "cretino"], ["sole", "mare", "fiore"]
    mk = lambda ws, n: [" ".join(rng.choice(ws, 5)) + f" {i}" for i in range(n)]  # noqa: E731
    tr = [S.LabelledText(t, S.UNSAFE, "it") for t in mk(words_u, 30)] + [S.LabelledText(t, S.SAFE, "it") for t in mk(words_s, 30)]
    ev = [S.LabelledText(t, S.UNSAFE, "it") for t in mk(words_u, 20)] + [S.LabelledText(t, S.SAFE, "it") for t in mk(words_s, 20)]
    Xtr, (Xev,) = S.featurize("char", [x.text for x in tr], [[x.text for x in ev]])
    m = S.train_eval_classifier(Xtr, [x.label for x in tr], Xev, [x.label for x in ev], n_boot=200)
    assert m["accuracy"] > 95 and m["acc_lo"] <= m["accuracy"] <= m["acc_hi"]
    assert m["unsafe_missed"] < 5 and m["safe_flagged"] < 5
    splits = S.SafetySplits(discovery=tr, seed=tr[:10] + tr[30:40], extra=tr[10:30] + tr[40:], eval=ev, natural=[])
    arms = S.downstream_arms(splits, ["f1", "f2", "f3"], ["r1", "r2", "r3"], budget=2)
    assert [x.label for x in arms["real + feature synthesis"][-2:]] == [S.UNSAFE, S.UNSAFE]
    assert len(arms["real + random synthesis"]) == 22 and len(arms["2x real"]) == 22
    assert len(arms["all real"]) == 60
    lo, hi = S.bootstrap_ci(np.array([1, 0] * 50), n_boot=500)
    assert lo < 0.5 < hi


def test_config_profiles_and_bad_input():
    assert S.SafetyConfig.for_profile("paper").layer == 30
    assert S.SafetyConfig.for_profile("smoke").budget < S.SafetyConfig.for_profile("mini").budget
    with pytest.raises(ValueError, match="profile"):
        S.SafetyConfig.for_profile("huge")
    with pytest.raises(ValueError, match="budget"):
        Y.natural_sampling(["a", "b"], 3)
    with pytest.raises(ValueError, match="fewer than"):
        S._balanced([S.LabelledText("a", S.SAFE, "x")], 2, __import__("random").Random(0))


# ----------------------------------------------------------------------------- notebook

def test_notebook_05_runs_on_smoke(smoke_scope, tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path / "results"))     # never into the repo's results/

    from qscope_utils.paths import repo_root, results_dir

    nb = repo_root() / "notebooks" / "05_safety_synthesis.ipynb"
    pm.execute_notebook(str(nb), str(tmp_path / "05.ipynb"), parameters={"profile": "smoke"},
                        cwd=str(nb.parent), progress_bar=False, log_output=False)
    summary = json.loads((results_dir("smoke") / "05_summary.json").read_text())
    assert summary["_meta"]["seed"] == 0 and summary["n_targets"] > 0
    assert 0 <= summary["seed_coverage_pct"] <= 100
    cfg = S.SafetyConfig.for_profile("smoke")
    assert summary["target_set"] == "pool_rare" and summary["matched_budget"] == cfg.budget   # fixed by design
    assert summary["pool_rate_max"] == pytest.approx(S.pool_rare_threshold(cfg.budget))
    pn = summary["paired_missing_at_matched_budget"]["feature vs natural"]
    got = summary["missing_covered_at_matched_budget"]
    assert pn["n"] == summary["n_missing"] and pn["both"] + pn["a_only"] == got["feature synthesis"]
    assert pn["both"] + pn["b_only"] == got["natural sampling"]
    for name in ("05_coverage_vs_budget.png", "05_downstream.csv", "05_targets.csv"):
        assert (results_dir("smoke") / name).exists()
