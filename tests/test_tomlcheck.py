"""One home for reading and checking the hand-edited TOML files (issue 22 item 4).

The server's estkit.toml and the node's file share the bounded read, the parse error that names
the file, the refusal of unknown keys and of ``true`` where a number belongs; each raises its own
error class.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from estkit.nmos.config import load_node_config
from estkit.nmos.errors import NodeConfigError
from estkit.server.config import ConfigError, load_config
from estkit.tomlcheck import (
    MAX_TOML_BYTES,
    TomlError,
    check_keys,
    expect,
    read_toml,
    sub_table,
)


def test_read_toml_parses_and_names_the_file_when_it_cannot(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[server]\nport = 8443\nhost = "h"\n')
    assert read_toml(good) == {"server": {"port": 8443, "host": "h"}}
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(TomlError, match=r"bad\.toml is not valid TOML") as caught:
        read_toml(bad)
    assert caught.value.hint == "fix the syntax"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TomlError, match="not valid TOML"):
        read_toml(binary)
    with pytest.raises(FileNotFoundError):  # the caller says what creates the file
        read_toml(tmp_path / "absent.toml")


def test_read_toml_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text("a = 1\n" + "#" * 53 + "\n")  # 60 bytes
    assert read_toml(path, limit=60) == {"a": 1}  # exactly the file size: read whole
    with pytest.raises(TomlError, match="larger than 59 bytes"):
        read_toml(path, limit=59)


def test_the_real_configurations_refuse_an_oversized_file(tmp_path: Path) -> None:
    huge = b"# " + b"x" * MAX_TOML_BYTES + b"\n"
    server = tmp_path / "estkit.toml"
    server.write_bytes(huge)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(server)
    node = tmp_path / "node.toml"
    node.write_bytes(huge)
    with pytest.raises(NodeConfigError, match="larger than"):
        load_node_config(node)


def test_expect_refuses_a_bool_where_a_number_belongs() -> None:
    assert expect(8443, int, "[server] port") == 8443
    assert expect(0.8, (int, float), "renewal_fraction") == 0.8
    assert expect(True, bool, "[est] enabled") is True
    with pytest.raises(TomlError, match=r"\[server\] port should be a int, found bool True"):
        expect(True, int, "[server] port")
    with pytest.raises(NodeConfigError, match="should be a str"):
        expect(5, str, "[server] host", error=NodeConfigError)


def test_unknown_keys_and_non_tables_are_refused_with_the_callers_error() -> None:
    check_keys({"port": 1}, {"port", "host"}, "server")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) prot in \[server\]") as caught:
        check_keys({"prot": 1}, {"port", "host"}, "server", error=ConfigError)
    assert caught.value.hint == "allowed here: host, port"
    assert sub_table({}, "limits", "f.toml") == {}
    with pytest.raises(ConfigError, match=r"f\.toml: \[limits\] must be a table"):
        sub_table({"limits": 3}, "limits", "f.toml", error=ConfigError)


def test_the_node_configuration_still_refuses_a_typo(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[est]\nauto_renewal = false\n[node]\noutput_dir = "out"\n')
    with pytest.raises(NodeConfigError, match=r"unknown setting\(s\) auto_renewal in \[est\]"):
        load_node_config(path)
