"""Every setting is documented once, in the README's settings table, and the table names nothing
that nothing reads."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the exchange reads its environment: the settings, the Kafka connection options they build,
# and the Procfile's command lines.
READERS = [ROOT / "exchange" / "settings.py", ROOT / "core" / "kafka" / "security.py", ROOT / "Procfile"]
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def settings_reads() -> set[str]:
    """The variables exchange/settings.py reads: `env.<cast>("NAME", ...)`, `environ.Env().str("NAME")`
    and its helpers that take a variable's name first (`secret_setting`, `_positive`)."""
    tree = ast.parse((ROOT / "exchange" / "settings.py").read_text())
    helpers = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.args.args and node.args.args[0].arg in {"variable", "name"}
    }
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        func = node.func
        # env.<cast>(...), or environ.Env().str(...)
        reads_env = isinstance(func, ast.Attribute) and (
            (isinstance(func.value, ast.Name) and func.value.id == "env") or isinstance(func.value, ast.Call)
        )
        if (reads_env or (isinstance(func, ast.Name) and func.id in helpers)) and NAME.match(str(node.args[0].value)):
            names.add(node.args[0].value)
    return names


def table_rows() -> list[list[str]]:
    """The names in the first column of each row of the README's settings table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1]) for row in rows]


def test_every_variable_the_settings_read_is_in_the_readme_table() -> None:
    documented = {name for row in table_rows() for name in row}
    assert settings_reads() - documented == set()


def test_the_parser_finds_the_settings_reads() -> None:
    # The checks above would pass on nothing if the parsing found nothing.
    assert {"DATABASE_URL", "DJANGO_SECRET_KEY", "ADMIN_LOGIN_FAILURE_LIMIT", "EXCHANGE_RUN_DIR"} <= settings_reads()
    assert len(table_rows()) > 40


def test_each_variable_has_one_row_of_its_own() -> None:
    names = [name for row in table_rows() for name in row]
    assert [row for row in table_rows() if len(row) != 1] == []
    assert len(names) == len(set(names))


def test_the_table_names_only_variables_something_reads() -> None:
    code = "\n".join(path.read_text() for path in READERS)
    unread = [name for row in table_rows() for name in row if not re.search(rf"\b{name}\b", code)]
    assert unread == []
