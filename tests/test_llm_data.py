"""llm_check.data: the built-in noisy-expert task, the CoLA / JSONL loaders and their errors,
tokenized batches with completion masks, and step-indexed batching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_check import data
from llm_check.tokenizer import load_tokenizer
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")


def test_builtin_expert_is_right_with_probability_one_minus_eps():
    task = data.builtin_task(seed=3, eps=0.25, n_train=4000, n_heldout=10)
    right = np.mean([ex.completion == ex.answer for ex in task.train])
    assert abs(right - 0.75) < 0.03
    for ex in task.train:
        a, b = (int(x) for x in ex.prompt.rstrip("=").split("+"))
        assert ex.answer == str(a + b)
        assert ex.completion in (str(a + b), str(a + b + 1))  # the one plausible wrong answer


def test_builtin_is_seeded_and_splits_differ():
    t1 = data.builtin_task(seed=1, eps=0.2)
    t2 = data.builtin_task(seed=1, eps=0.2)
    t3 = data.builtin_task(seed=2, eps=0.2)
    assert t1 == t2
    assert t1.train != t3.train
    assert t1.train[:50] != t1.heldout[:50]


@pytest.mark.parametrize("kw", [{"eps": 1.0}, {"eps": -0.1}, {"eps": 0.1, "max_operand": 0},
                                {"eps": 0.1, "n_train": 0}])
def test_builtin_rejects_bad_settings(kw):
    with pytest.raises(InputError, match="setting"):
        data.builtin_task(seed=0, **kw)


def test_format_examples_keep_prompts_and_the_answer_set():
    task = data.builtin_task(seed=0, eps=0.2, n_train=2000)
    fmt = data.format_examples(task.train, seed=0, p_correct=0.0)
    assert [e.prompt for e in fmt] == [e.prompt for e in task.train]
    assert sorted(e.completion for e in fmt) == sorted(e.completion for e in task.train)
    right = np.mean([e.completion == e.answer for e in fmt])
    assert right < 0.3  # shuffled: the map is not taught
    half = data.format_examples(task.train, seed=0, p_correct=0.5)
    assert np.mean([e.completion == e.answer for e in half]) > 0.5


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_glue_cola_tsv(tmp_path):
    d = tmp_path / "cola"
    d.mkdir()
    _write(d / "train.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.\n")
    _write(d / "dev.tsv", "gj04\t1\t\tShe left.\n")
    task = data.load_task(f"cola:{d}", seed=0, eps=0.1)
    assert [e.answer for e in task.train] == ["acceptable", "unacceptable"]
    assert "The cat sat." in task.train[0].prompt
    assert task.heldout[0].completion == "acceptable"
    assert task.name == "cola" and task.eps is None


def test_glue_cola_test_split_has_no_labels(tmp_path):
    p = _write(tmp_path / "test.tsv", "index\tsentence\n0\tThe cat sat.\n1\tSat cat.\n")
    assert data.load_glue_cola_tsv(p) == [("The cat sat.", None), ("Sat cat.", None)]


@pytest.mark.parametrize("text,match", [
    ("gj04\t2\t\tThe cat sat.\n", r"train.tsv:1: label '2'"),
    ("gj04\t1\t\tThe cat sat.\ngj04\t1\tThe cat sat.\n", r"train.tsv:2: expected 4"),
])
def test_glue_cola_bad_rows_name_file_and_line(tmp_path, text, match):
    d = tmp_path / "cola"
    d.mkdir()
    _write(d / "train.tsv", text)
    _write(d / "dev.tsv", "gj04\t1\t\tShe left.\n")
    with pytest.raises(InputError, match=match):
        data.load_cola(str(d))


def test_hf_cola_jsonl_and_csv(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    _write(d / "train.jsonl", json.dumps({"sentence": "A b.", "label": 1, "idx": 0}) + "\n"
           + json.dumps({"sentence": "B a.", "label": 0, "idx": 1}) + "\n")
    _write(d / "validation.csv", 'sentence,label,idx\n"Yes, it is.",1,0\n')
    task = data.load_cola(str(d))
    assert [e.answer for e in task.train] == ["acceptable", "unacceptable"]
    assert "Yes, it is." in task.heldout[0].prompt


@pytest.mark.parametrize("name,text,match", [
    ("train.jsonl", '{"sentence": "A.", "label": 1}\n{"sentence": "B."}\n',
     r"train.jsonl:2: missing column 'label'"),
    ("train.jsonl", '{"sentence": "A.", "label": 1}\n{bad json\n', r"train.jsonl:2: bad JSON"),
    ("train.jsonl", '{"sentence": "A.", "label": 3}\n', r"train.jsonl:1: label '3'"),
    ("train.csv", "sentence,label,idx\nA.,1,0\nB.,7,1\n", r"train.csv:3: label '7'"),
    ("train.csv", "sentence,idx\nA.,0\n", r"train.csv:2: missing column 'label'"),
])
def test_hf_cola_bad_rows(tmp_path, name, text, match):
    d = tmp_path / "hf"
    d.mkdir()
    _write(d / name, text)
    _write(d / "validation.jsonl", '{"sentence": "A.", "label": 1}\n')
    with pytest.raises(InputError, match=match):
        data.load_cola(str(d))


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data.importlib.util, "find_spec",
                        lambda name: None if name == "pyarrow" else object())
    p = _write(tmp_path / "train.parquet", "not parquet")
    with pytest.raises(InputError, match="pyarrow"):
        data.load_hf_cola(p)


def test_jsonl_task_and_its_errors(tmp_path):
    rows = [{"prompt": f"q{i}", "answer": str(i % 3)} for i in range(20)]
    rows[3] = {"prompt": "q3", "completion": "The answer is 0", "answer": "0"}
    p = _write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    task = data.load_task(f"jsonl:{p}", seed=0, eps=0.1, heldout_fraction=0.2)
    assert len(task.train) == 16 and len(task.heldout) == 4
    assert {e.prompt for e in task.train + task.heldout} == {r["prompt"] for r in rows}
    ex = next(e for e in task.train + task.heldout if e.prompt == "q3")
    assert ex.completion == "The answer is 0" and ex.answer == "0"
    bad = _write(tmp_path / "bad.jsonl", '{"prompt": "a", "answer": "1"}\n{"answer": "2"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: missing column 'prompt'"):
        data.load_jsonl(bad)
    bad2 = _write(tmp_path / "bad2.jsonl", '{"prompt": "a"}\n')
    with pytest.raises(InputError, match=r"bad2.jsonl:1: needs a 'completion' or an 'answer'"):
        data.load_jsonl(bad2)


def test_unknown_task_is_rejected():
    with pytest.raises(InputError, match="--task 'mnist'"):
        data.load_task("mnist", seed=0, eps=0.1)


def test_encode_examples_masks_the_completion_and_eos():
    tok = load_tokenizer("tiny")
    ex = [data.Example("1+2=", "3", "3"), data.Example("10+2=", "12", "12")]
    b = data.encode_examples(tok, ex)
    for i, e in enumerate(ex):
        ids, mask = tok.example_ids(e.prompt, e.completion)
        n = len(ids)
        assert b.tokens[i, :n].tolist() == ids
        assert b.completion_mask[i, :n].tolist() == mask
        assert b.attention_mask[i].sum() == n and b.completion_mask[i, n:].sum() == 0
        assert b.tokens[i, n - 1] == tok.eos_id
        assert tok.decode(b.tokens[i][b.completion_mask[i] == 1][:-1]) == e.completion


def test_encode_prompts_left_pads():
    tok = load_tokenizer("tiny")
    toks, mask = data.encode_prompts(tok, ["1+2=", "a much longer prompt here"])
    assert mask[:, -1].tolist() == [1, 1]
    short = tok.prompt_ids("1+2=")
    assert toks[0, -len(short):].tolist() == short and mask[0].sum() == len(short)


def test_batch_indices_are_a_function_of_the_step_and_cover_each_epoch():
    n, bs = 50, 8
    per_epoch = n // bs
    epoch0 = np.concatenate([data.batch_indices(n, bs, 7, s) for s in range(per_epoch)])
    assert len(set(epoch0.tolist())) == per_epoch * bs  # no repeats within an epoch
    assert np.array_equal(data.batch_indices(n, bs, 7, 9), data.batch_indices(n, bs, 7, 9))
    assert not np.array_equal(data.batch_indices(n, bs, 7, 0),
                              data.batch_indices(n, bs, 7, per_epoch))
    with pytest.raises(InputError, match="batch_size=64"):
        data.batch_indices(n, 64, 0, 0)
