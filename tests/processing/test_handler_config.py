"""model.toml's [handler], pad_value and mask: read, checked, and refused with the field named."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from leanserve.config import parse_model_config
from leanserve.errors import ConfigError
from leanserve.processing.handler import handler_config, load_handler, needs_processing
from leanserve.repository import scan_model
from tests.processing.models import write_masked_mean


def parse(text: str) -> object:
    return parse_model_config(tomllib.loads(text), "m", "models/m/model.toml")


def test_handler_tables_read_with_their_defaults() -> None:
    config = parse(
        "[handler]\nsteps = ['function:scale', 'model:other:2']\n"
        "[[handler.input]]\nname = 'text'\ndatatype = 'BYTES'\nshape = []\n"
        "[[input]]\nname = 'ids'\npad_value = 0\n[[input]]\nname = 'mask'\nmask = true\n"
    )
    assert config.handler is not None  # type: ignore[attr-defined]
    assert config.handler.file == "handler.py" and config.handler.timeout_ms == 30000  # type: ignore[attr-defined]
    assert [s.name for s in config.public_inputs] == ["text"]  # type: ignore[attr-defined]
    assert config.ragged  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[[handler.input]]\nname = 'text'\n", "handler.input[0].datatype"),
        ("[handler]\nsteps = ['shell:rm']\n", "handler.steps"),
        ("[handler]\nfile = '../evil.py'\n", "handler.file"),
        ("[handler]\nfile = 'handler.txt'\n", "handler.file"),
        ("[handler]\ntimeout_ms = 0\n", "handler.timeout_ms"),
    ],
)
def test_bad_handler_tables_name_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert e.value.field == field


def test_pad_value_needs_a_variable_first_dimension(tmp_path: Path) -> None:
    write_masked_mean(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "model.toml").write_text(
        "max_batch_size = 4\n[[input]]\nname = 'input_ids'\nshape = [3]\n"
        "pad_value = 0\n[[input]]\nname = 'attention_mask'\n"
    )
    from leanserve.repository import resolve_version

    entry = scan_model(tmp_path / "m")
    assert entry.config is not None
    with pytest.raises(ConfigError) as e:
        resolve_version(entry.directory, entry.config, 1)
    assert "input[0]" in str(e.value) or "declares" in str(e.value)


def test_a_handler_that_fails_to_import_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("raise RuntimeError('no tokenizer here')\n")
    config = parse("max_batch_size = 4\n")
    hc = handler_config(config, tmp_path)  # type: ignore[arg-type]
    assert hc is not None and needs_processing(config, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="failed to import: RuntimeError: no tokenizer here"):
        load_handler(tmp_path, 1, hc)
    (tmp_path / "handler.py").write_text("def preprocess(a, b, c):\n    return a\n")
    with pytest.raises(ConfigError, match="must take one argument"):
        load_handler(tmp_path, 1, hc)
    (tmp_path / "handler.py").write_text("def postprocess(outputs):\n    return outputs\n")
    handler = load_handler(tmp_path, 1, hc)
    assert handler is not None and handler.preprocess is None and handler.postprocess is not None
    assert handler.postprocess([{"y": 1}], [{}]) == [{"y": 1}]  # one argument: the requests are not passed


def test_a_model_without_any_of_it_is_not_processed(tmp_path: Path) -> None:
    assert not needs_processing(parse("max_batch_size = 4\n"), tmp_path)  # type: ignore[arg-type]


def test_check_imports_the_handler(tmp_path: Path) -> None:
    from leanserve import check_repository
    from tests.processing.models import write_repository

    repo = write_repository(tmp_path)
    assert all(c.ok for c in check_repository(repo).results if c.model == "chars")
    (repo / "chars" / "handler.py").write_text("import no_such_module_here\n")
    failed = [c for c in check_repository(repo).results if c.model == "chars"]
    assert failed and not failed[0].ok and "no_such_module_here" in (failed[0].error or "")
