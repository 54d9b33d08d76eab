#!/usr/bin/env python3
"""Equivalence check against Hugging Face `transformers.LlamaForCausalLM`.

DESIGN.md section 3 says our model must equal HF's LlamaForCausalLM. This
script proves it end to end with the real `transformers` library: for each
case it trains a tiny model with our tools, exports it with llm-export
(float32), loads the export with `LlamaForCausalLM.from_pretrained` and checks

  1. loss:      HF's mean next-token cross-entropy over the first K
                non-overlapping windows of seq-length+1 tokens (exactly as
                llm-eval defines them) equals llm-eval's val_loss on the export
                (relative difference < 1e-5, fp32 vs fp32). The same HF logits
                with the cross-entropy taken in fp64, and an fp64 HF forward,
                must agree to < 1e-6 (env LLM_HF_STRICT_RTOL; measured ~1e-9):
                a wrong RMSNorm eps (1e-5 vs 1e-6) moves the loss by only
                ~2e-6..5e-6 relative, which 1e-5 alone would miss;
  2. tokenizer: `transformers.LlamaTokenizer(tokenizer.model)` gives the same
                ids as our tokenizer, on the whole corpus and on the prompts;
  3. generate:  `llm-generate --temperature 0` continues each prompt like HF
                `generate(do_sample=False)` from the same ids (at least the
                first 10 tokens must match; a later divergence is reported,
                with HF's top-2 logit gap, since greedy decoding of a tiny
                model can flip on near-ties).

Usage:  hf_equivalence.py [BIN_DIR]      (or env LLM_BIN_DIR; default ../../build/bin)
        --keep        keep the temporary directory and print its path
        --train-iters N  (default 200, so that greedy continuations are not trivial)

Exit status: 0 pass, 1 mismatch or tool failure, 77 skipped (torch or
transformers not importable; CTest's SKIP_RETURN_CODE).

To run it (Debian: python3-torch 1.13 installed; tested with transformers 4.36.2 and 4.40.2):
  /usr/bin/python3 -m venv --system-site-packages /tmp/hfvenv
  /tmp/hfvenv/bin/pip install 'transformers>=4.36,<4.41' sentencepiece safetensors
  cmake -S . -B build -DLLM_HF_PYTHON=/tmp/hfvenv/bin/python
  cmake --build build --target check-hf      # builds the tools, then ctest -L hf
or directly: /tmp/hfvenv/bin/python tests/python/hf_equivalence.py build/bin
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
HOW_TO_RUN = ("to run: /usr/bin/python3 -m venv --system-site-packages /tmp/hfvenv && "
              "/tmp/hfvenv/bin/pip install 'transformers>=4.36,<4.41' sentencepiece safetensors && "
              "cmake -S . -B build -DLLM_HF_PYTHON=/tmp/hfvenv/bin/python && cmake --build build --target check-hf")

LOSS_RTOL = 1e-5          # fp32 (ours) vs HF's fp32 loss (labels=)
STRICT_RTOL = float(os.environ.get("LLM_HF_STRICT_RTOL", "1e-6"))  # vs HF logits with CE in fp64
EXPORT_RTOL = 1e-7        # llm-eval on the checkpoint vs on the fp32 export
MIN_GREEDY_MATCH = 10     # greedy tokens that must agree
NEAR_TIE = 1e-3           # HF top-2 logit gap below which a divergence is a near-tie
EVAL_SAMPLES = 32
CORPUS = "/usr/share/common-licenses/GPL-3"
PROMPTS = ["This program is free software", "The GNU General Public License"]

CASES = [
    {
        "name": "gqa_untied",
        "args": ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
                 "--num-query-groups", "2", "--seq-length", "64"],
    },
    {
        # MHA, tied embeddings, explicit FFN width, non-default RoPE theta and
        # norm eps (checks that the export carries them into config.json).
        "name": "mha_tied",
        "args": ["--num-layers", "3", "--hidden-size", "96", "--num-attention-heads", "6",
                 "--num-query-groups", "6", "--ffn-hidden-size", "160", "--seq-length", "128",
                 "--tie-embeddings", "--rotary-base", "500000", "--norm-epsilon", "1e-6"],
    },
]
COMMON_TRAIN = ["--micro-batch-size", "4", "--lr", "3e-3", "--eval-iters", "0", "--log-interval", "1000"]


def skip(msg):
    print(f"skipped: {msg}; {HOW_TO_RUN}")
    sys.exit(SKIP)


def import_hf():
    # find_spec first: no torch import (slow) when transformers is absent anyway.
    for mod in ("transformers", "torch", "sentencepiece", "numpy", "safetensors"):
        if importlib.util.find_spec(mod) is None:
            skip(f"{'transformers' if mod == 'transformers' else mod} not importable "
                 f"(python {sys.executable})")
    try:
        import numpy
        import sentencepiece
        import torch
        import transformers
        from transformers import LlamaForCausalLM, LlamaTokenizer  # noqa: F401
    except Exception as e:  # ImportError, or a version mismatch raising something else
        skip(f"transformers not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return numpy, sentencepiece, torch, transformers


class Failure(Exception):
    pass


def run_tool(bin_dir, name, args, env):
    cmd = [os.path.join(bin_dir, name)] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise Failure(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bin_dir", nargs="?", default=os.environ.get("LLM_BIN_DIR"))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--train-iters", type=int, default=200)
    opt = ap.parse_args()
    if not opt.bin_dir:
        opt.bin_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "bin")
    opt.bin_dir = os.path.abspath(opt.bin_dir)

    np, spm, torch, transformers = import_hf()
    from transformers import LlamaForCausalLM, LlamaTokenizer
    transformers.logging.set_verbosity_error()

    for tool in ("llm-prepare-data", "llm-train", "llm-export", "llm-eval", "llm-generate"):
        if not os.access(os.path.join(opt.bin_dir, tool), os.X_OK):
            print(f"FAIL: {tool} not found in {opt.bin_dir} (pass BIN_DIR or set LLM_BIN_DIR)")
            return 1
    if not os.path.isfile(CORPUS):
        skip(f"corpus {CORPUS} missing")

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "2")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    torch.set_num_threads(int(env["OMP_NUM_THREADS"]))

    print(f"hf_equivalence: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, tools {opt.bin_dir}")
    tmp = tempfile.mkdtemp(prefix="hf_equiv_")
    failures = []
    try:
        # ---- data and tokenizer (shared by the cases) ----
        tok_model = os.path.join(tmp, "tok.model")
        prefix = os.path.join(tmp, "corpus")
        run_tool(opt.bin_dir, "llm-prepare-data",
                 ["--input", CORPUS, "--tokenizer-model", tok_model, "--vocab-size", 512,
                  "--output-prefix", prefix], env)
        corpus_ids = np.fromfile(prefix + ".bin", dtype="<u2").astype(np.int64)  # vocab 512 <= 65536

        # Our ids of each prompt: a prompt file through llm-prepare-data gives BOS + ids + EOS,
        # i.e. exactly what llm-generate feeds the model (BOS + encode(prompt)) plus EOS.
        our_prompt_ids = []
        for i, p in enumerate(PROMPTS):
            pf = os.path.join(tmp, f"prompt{i}.txt")
            with open(pf, "w", encoding="utf-8") as f:
                f.write(p)
            run_tool(opt.bin_dir, "llm-prepare-data",
                     ["--input", pf, "--tokenizer-model", tok_model, "--output-prefix",
                      os.path.join(tmp, f"prompt{i}")], env)
            ids = np.fromfile(os.path.join(tmp, f"prompt{i}.bin"), dtype="<u2").astype(int).tolist()
            assert ids[0] == 1 and ids[-1] == 2, ids
            our_prompt_ids.append(ids[:-1])

        # ---- tokenizer equivalence ----
        hf_tok = LlamaTokenizer(tok_model)
        with open(CORPUS, encoding="utf-8") as f:
            doc = f.read().rstrip("\r\n")  # llm-prepare-data strips trailing newlines
        hf_corpus = hf_tok(doc).input_ids + [hf_tok.eos_token_id]
        tok_ok = hf_corpus == corpus_ids.tolist()
        print(f"tokenizer: LlamaTokenizer(tokenizer.model) on the corpus ({len(corpus_ids)} ids): "
              f"{'identical' if tok_ok else 'DIFFERENT'}")
        if not tok_ok:
            n = next((i for i, (a, b) in enumerate(zip(hf_corpus, corpus_ids.tolist())) if a != b),
                     min(len(hf_corpus), len(corpus_ids)))
            failures.append(f"tokenizer: corpus ids differ from position {n}: "
                            f"HF {hf_corpus[n:n + 8]} vs ours {corpus_ids[n:n + 8].tolist()}")
        for p, ours in zip(PROMPTS, our_prompt_ids):
            hf = hf_tok(p).input_ids
            print(f"tokenizer: prompt {p!r}: ours {ours} HF {'same' if hf == ours else hf}")
            if hf != ours:
                failures.append(f"tokenizer: prompt {p!r}: HF {hf} vs ours {ours}")
        sp = spm.SentencePieceProcessor(model_file=tok_model)

        for case in CASES:
            failures += run_case(case, opt, env, tmp, tok_model, prefix, corpus_ids, our_prompt_ids,
                                 sp, np, torch, LlamaForCausalLM)
    except Failure as e:
        failures.append(str(e))
    finally:
        if opt.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if failures:
        print("\nFAIL:")
        for f in failures:
            print("  " + f)
        return 1
    print("\nPASS: exported models compute the same loss and greedy continuations as "
          "transformers.LlamaForCausalLM")
    return 0


def run_case(case, opt, env, tmp, tok_model, prefix, corpus_ids, our_prompt_ids, sp, np, torch,
             LlamaForCausalLM):
    name = case["name"]
    failures = []
    ck = os.path.join(tmp, name + "_ckpt")
    ex = os.path.join(tmp, name + "_hf")
    run_tool(opt.bin_dir, "llm-train",
             ["--data-path", prefix, "--tokenizer-model", tok_model, "--train-iters", opt.train_iters,
              "--save", ck] + case["args"] + COMMON_TRAIN, env)
    run_tool(opt.bin_dir, "llm-export", ["--load", ck, "--output", ex, "--dtype", "float32"], env)
    flags = case["args"]
    seq = int(flags[flags.index("--seq-length") + 1])
    print(f"\n[{name}] {' '.join(flags)} --train-iters {opt.train_iters}")

    # ---- ours ----
    ev = json.loads(run_tool(opt.bin_dir, "llm-eval",
                             ["--load", ex, "--data-path", prefix, "--eval-samples", EVAL_SAMPLES], env))
    ev_ck = json.loads(run_tool(opt.bin_dir, "llm-eval",
                                ["--load", ck, "--data-path", prefix, "--eval-samples", EVAL_SAMPLES], env))
    ours = float(ev["val_loss"])
    if ev["seq_length"] != seq or ev["tokens"] != EVAL_SAMPLES * seq:
        failures.append(f"[{name}] llm-eval evaluated {ev['tokens']} tokens at seq {ev['seq_length']}, "
                        f"expected {EVAL_SAMPLES * seq} at {seq}")
    d = abs(float(ev_ck["val_loss"]) - ours) / abs(ours)
    if d > EXPORT_RTOL:
        failures.append(f"[{name}] llm-eval on checkpoint {ev_ck['val_loss']!r} vs on export {ours!r} "
                        f"(rel {d:.2e})")

    # ---- HF ----
    model = LlamaForCausalLM.from_pretrained(ex, torch_dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    print(f"  HF config: layers {cfg.num_hidden_layers}, hidden {cfg.hidden_size}, heads "
          f"{cfg.num_attention_heads}, kv heads {cfg.num_key_value_heads}, ffn {cfg.intermediate_size}, "
          f"vocab {cfg.vocab_size}, rope_theta {cfg.rope_theta}, rms_norm_eps {cfg.rms_norm_eps}, "
          f"tie {cfg.tie_word_embeddings}")
    expect = {"num_key_value_heads": int(flags[flags.index("--num-query-groups") + 1]),
              "tie_word_embeddings": "--tie-embeddings" in flags}
    if "--rotary-base" in flags:
        expect["rope_theta"] = float(flags[flags.index("--rotary-base") + 1])
    if "--norm-epsilon" in flags:
        expect["rms_norm_eps"] = float(flags[flags.index("--norm-epsilon") + 1])
    if "--ffn-hidden-size" in flags:
        expect["intermediate_size"] = int(flags[flags.index("--ffn-hidden-size") + 1])
    for k, v in expect.items():
        if getattr(cfg, k) != v:
            failures.append(f"[{name}] config.json {k} = {getattr(cfg, k)!r}, trained with {v!r}")
    if cfg.tie_word_embeddings and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        failures.append(f"[{name}] tied export but HF lm_head is not embed_tokens")

    n = EVAL_SAMPLES * (seq + 1)
    windows = torch.from_numpy(corpus_ids[:n].reshape(EVAL_SAMPLES, seq + 1))
    with torch.no_grad():
        out = model(input_ids=windows, labels=windows)  # HF shifts: logits[:, :-1] vs tokens[:, 1:]
        hf32 = float(out.loss)
        logits = out.logits[:, :-1].reshape(-1, cfg.vocab_size).double()
        hf32_manual = float(torch.nn.functional.cross_entropy(logits, windows[:, 1:].reshape(-1)))
        # float64 reference (HF's eager attention still takes its softmax in fp32 and its
        # RoPE cos/sin in fp32; lm_head is applied here in fp64 to skip HF's logits.float()).
        # (Default dtype float64 meanwhile: transformers 4.36 builds its causal mask with
        # torch.full(..., finfo(float64).min) in the default dtype.)
        torch.set_default_dtype(torch.float64)
        try:
            m64 = model.to(torch.float64)
            h = m64.model(input_ids=windows).last_hidden_state
            lg64 = m64.lm_head(h)[:, :-1].reshape(-1, cfg.vocab_size)
            hf64 = float(torch.nn.functional.cross_entropy(lg64, windows[:, 1:].reshape(-1)))
        finally:
            torch.set_default_dtype(torch.float32)
            model.to(torch.float32)
    rel = abs(hf32 - ours) / abs(ours)
    rel_manual = abs(hf32_manual - ours) / abs(ours)
    rel64 = abs(hf64 - ours) / abs(ours)
    print(f"  loss over {EVAL_SAMPLES} windows x {seq} targets: ours (llm-eval) {ours:.10f} | "
          f"HF fp32 labels= {hf32:.10f} (rel {rel:.2e}) | HF fp32 logits, CE in fp64 "
          f"{hf32_manual:.10f} (rel {rel_manual:.2e}) | HF fp64 {hf64:.10f} (rel {rel64:.2e})")
    for label, hf, r, tol in (("HF fp32 loss (labels=)", hf32, rel, LOSS_RTOL),
                              ("HF fp32 logits, CE in fp64", hf32_manual, rel_manual, STRICT_RTOL),
                              ("HF fp64 loss", hf64, rel64, STRICT_RTOL)):
        if not r < tol:
            failures.append(f"[{name}] {label} vs llm-eval: ours {ours!r} vs HF {hf!r} (rel {r:.2e} >= {tol:g})")

    # ---- greedy continuation ----
    for prompt, ids in zip(PROMPTS, our_prompt_ids):
        max_new = min(20, seq - len(ids))  # llm-generate clips to the model's context
        text = run_tool(opt.bin_dir, "llm-generate",
                        ["--load", ex, "--prompt", prompt, "--max-new-tokens", 20, "--temperature", 0], env)
        text = text[:-1] if text.endswith("\n") else text
        inp = torch.tensor([ids])
        with torch.no_grad():
            g = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=max_new,
                               do_sample=False, num_beams=1, eos_token_id=2, pad_token_id=0,
                               output_scores=True, return_dict_in_generate=True)
        hf_new = g.sequences[0, len(ids):].tolist()
        scores = [s[0] for s in g.scores]
        if 2 in hf_new:
            hf_new = hf_new[:hf_new.index(2)]  # llm-generate stops before EOS
        hf_text = sp.decode(ids[1:] + hf_new)
        # Tokens of HF's continuation whose decoding is still a prefix of ours.
        matched = 0
        while matched < len(hf_new) and text.startswith(sp.decode(ids[1:] + hf_new[:matched + 1])):
            matched += 1
        if hf_text == text:
            print(f"  generate {prompt!r}: identical, {len(hf_new)} new tokens: {text[len(prompt):]!r}")
            continue
        top2 = torch.topk(scores[matched].double(), 2).values if matched < len(scores) else None
        gap = float(top2[0] - top2[1]) if top2 is not None else float("nan")
        print(f"  generate {prompt!r}: first {matched}/{len(hf_new)} tokens agree; HF top-2 logit gap at "
              f"token {matched}: {gap:.2e}\n    ours {text!r}\n    HF   {hf_text!r}")
        if matched < min(MIN_GREEDY_MATCH, len(hf_new)) and not gap < NEAR_TIE:
            failures.append(f"[{name}] generate {prompt!r}: only {matched} greedy tokens agree "
                            f"(HF top-2 gap {gap:.2e}): ours {text!r} vs HF {hf_text!r}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
