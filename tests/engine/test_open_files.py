"""Files a notebook holds open come back open on the same path, at the same place.

A cell that opens a file for writing is a side effect and never re-run, so a log or an output
CSV held in a variable used to be lost at every migration, and what had been written into its
buffer was lost with the old kernel. Regular files are re-opened instead (a write-mode one
without truncating it), after the checkpoint flushed them.
"""

from __future__ import annotations

import pytest

from tests.engine.migrate import assert_verified, checkpoint, restore, run_all
from tests.faults import kill9

STRATEGIES = ["optimal", "ship-all", "recompute-all"]


def chdir(path) -> str:
    return f"import os; os.chdir({str(path)!r})"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_log_open_for_writing_keeps_its_lines_and_goes_on_after_them(
        make_kernel, store_url, tmp_path, strategy):
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "log = open('run.log', 'w')", "log.write('epoch 1\\n')",
                "log.write('epoch 2\\n')"])
    checkpoint(a, store_url, strategy=strategy)
    # flushed by the checkpoint: the old kernel may die without closing it
    assert (tmp_path / "run.log").read_text() == "epoch 1\nepoch 2\n"
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("(log.name, log.mode, log.closed, log.writable(), log.readable())") == [
        "run.log", "w", False, True, False]
    b.ok("log.write('epoch 3\\n'); log.flush()")
    assert (tmp_path / "run.log").read_text() == "epoch 1\nepoch 2\nepoch 3\n"


def test_a_binary_file_open_for_appending_appends(make_kernel, store_url, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"head")
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "out = open('data.bin', 'ab')", "out.write(b'-one')"])
    checkpoint(a, store_url, strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("out.write(b'-two'); out.flush()")
    assert (tmp_path / "data.bin").read_bytes() == b"head-one-two"
    assert b.value("type(out).__name__") == "BufferedWriter"


def test_the_file_of_a_with_block_comes_back_closed_not_lost(make_kernel, store_url, tmp_path):
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import json\nwith open('out.json', 'w') as f:\n"
                "    json.dump({'k': 1}, f)"])
    checkpoint(a, store_url)
    b = make_kernel()
    r = restore(b, store_url)
    assert_verified(r)
    assert b.value("(f.name, f.mode, f.closed)") == ["out.json", "w", True]
    assert (tmp_path / "out.json").read_text() == '{"k": 1}'  # written once, not again


def test_a_file_read_halfway_goes_on_from_the_same_line(make_kernel, store_url, tmp_path):
    (tmp_path / "rows.txt").write_text("h\u00e9ader\nrow 1\nrow 2\nrow 3\n")
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "src = open('rows.txt', encoding='utf-8')",
                "header = src.readline(); first = src.readline()"])
    checkpoint(a, store_url, strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("(header, first, src.readline())") == ["h\u00e9ader\n", "row 1\n", "row 2\n"]


def test_a_file_opened_by_a_relative_name_in_another_directory_reopens_there(
        make_kernel, store_url, tmp_path):
    (tmp_path / "sub").mkdir()
    a = make_kernel()
    run_all(a, [chdir(tmp_path / "sub"), "log = open('sub.log', 'w'); log.write('x')",
                chdir(tmp_path)])
    checkpoint(a, store_url, strategy="ship-all")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("log.write('y'); log.flush()")
    assert (tmp_path / "sub" / "sub.log").read_text() == "xy"
    assert not (tmp_path / "sub.log").exists()


def test_a_written_file_missing_where_the_kernel_restores_is_lost_by_name(
        make_kernel, store_url, tmp_path):
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "log = open('node-local.log', 'w')", "n = 1"])
    checkpoint(a, store_url)
    (tmp_path / "node-local.log").unlink()  # it was on the old node's disk
    b = make_kernel()
    r = restore(b, store_url)
    assert "node-local.log" in r["lost"]["log"] and "does not exist here" in r["lost"]["log"]
    assert not (tmp_path / "node-local.log").exists()  # not created empty
    assert b.value("n") == 1


def test_a_pipe_is_not_reopened(make_kernel, store_url, tmp_path):
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import os\nr, w = os.pipe()\nreader = open(r, 'rb')"])
    c = checkpoint(a, store_url, strategy="ship-all")
    assert c["variables"]["reader"] != "ship"


def test_a_csv_writer_writes_on_into_its_reopened_file(make_kernel, store_url, tmp_path):
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import csv\nout = open('rows.csv', 'w', newline='')\n"
                "w = csv.writer(out, delimiter=';')\nd = csv.DictWriter(out, ['a', 'b'])",
                "w.writerow(['x', 1])"])
    checkpoint(a, store_url)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("w.writerow(['y', 2]); d.writerow({'a': 3, 'b': 4}); out.flush()")
    assert (tmp_path / "rows.csv").read_bytes() == b"x;1\r\ny;2\r\n3,4\r\n"
    assert b.value("w.dialect.delimiter") == ";"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_csv_reader_copying_rows_into_an_output_goes_on_from_the_next_row(
        make_kernel, store_url, tmp_path, strategy):
    """The rows copied so far are in the output (a side effect), so the reader's cells cannot
    be re-run: the reader and its file must ship, at their place."""
    (tmp_path / "in.csv").write_text("name;n\nx;1\ny;2\nz;3\nw;4\n")
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import csv, itertools\nsrc = open('in.csv', newline='')\n"
                "reader = csv.reader(src, delimiter=';')\nheader = next(reader)\n"
                "out = open('out.csv', 'w', newline='')\nwriter = csv.writer(out)\n"
                "writer.writerow(header)",
                "for row in itertools.islice(reader, 2):\n    writer.writerow(row)"])
    checkpoint(a, store_url, strategy=strategy)
    # the checkpoint left the notebook's own reader where it was
    assert a.value("(next(reader), reader.line_num)") == [["z", "3"], 4]
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("(header, reader.line_num, reader.dialect.delimiter)") == [
        ["name", "n"], 3, ";"]
    b.ok("for row in reader:\n    writer.writerow(row)\nout.flush()")
    assert b.value("reader.line_num") == 5
    assert (tmp_path / "out.csv").read_text() == "name,n\nx,1\ny,2\nz,3\nw,4\n"


def test_a_file_left_by_a_for_loop_goes_on_from_the_next_line(make_kernel, store_url, tmp_path):
    # written on Windows: "\r\n" on disk, read as "\n", so the text and the bytes differ
    (tmp_path / "in.txt").write_bytes("h\u00e9ad\r\n".encode() + b"".join(
        b"line %d\r\n" % i for i in range(3000)))
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "f = open('in.txt', encoding='utf-8')\nout = open('out.txt', 'w')",
                "for line in f:\n    out.write(line.upper())\n"
                "    if line.startswith('line 2'):\n        break"])
    checkpoint(a, store_url)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    assert b.value("(line, next(f), f.readline(), len(f.readlines()))") == [
        "line 2\n", "line 3\n", "line 4\n", 2995]
    b.ok("out.close()")
    assert (tmp_path / "out.txt").read_text() == "H\u00c9AD\nLINE 0\nLINE 1\nLINE 2\n"


def test_a_logging_file_handler_a_queue_and_an_event_come_back_working(
        make_kernel, store_url, tmp_path):
    """Their unheld locks come back as new locks (the handler's RLock made it unpicklable,
    and its file-writing cell made it lost)."""
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import logging, queue, threading\n"
                "fh = logging.FileHandler('exp.log')\n"
                "fh.setFormatter(logging.Formatter('%(levelname)s %(message)s'))\n"
                "q = queue.Queue(); q.put('job 1')\ndone = threading.Event(); done.set()",
                "fh.emit(logging.makeLogRecord({'msg': 'one', 'levelname': 'INFO'}))"])
    c = checkpoint(a, store_url)
    assert c["variables"]["fh"] == "ship"
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("fh.emit(logging.makeLogRecord({'msg': 'two', 'levelname': 'INFO'})); fh.flush()\n"
         "q.put('job 2')")
    assert (tmp_path / "exp.log").read_text() == "INFO one\nINFO two\n"
    assert b.value("[q.get_nowait(), q.get_nowait(), q.empty(), done.is_set()]") == [
        "job 1", "job 2", True, True]


def test_a_logger_configured_by_a_file_writing_cell_keeps_its_level_and_handlers(
        make_kernel, store_url, tmp_path):
    """Loggers pickle by name: the restore gave `exp` with no handler and no level, and
    verified it, while the configuring cell (a FileHandler: a side effect) was not re-run."""
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import logging, sys\nlog = logging.getLogger('exp')\n"
                "log.setLevel(logging.INFO); log.propagate = False\n"
                "log.addHandler(logging.FileHandler('exp.log'))\n"
                "log.addHandler(logging.StreamHandler(sys.stdout))",
                "log.info('one')"])
    checkpoint(a, store_url)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    r = b.run("log.info('two'); log.debug('not shown'); [h.flush() for h in log.handlers]")
    assert r.stdout == "two\n"  # into the restored notebook's own output
    assert (tmp_path / "exp.log").read_text() == "one\ntwo\n"
    assert b.value("(log.level, log.propagate, logging.getLogger('exp') is log)") == [
        20, False, True]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_a_logger_reconfigured_after_a_checkpoint_is_not_restored_as_it_was_then(
        make_kernel, store_url, tmp_path, strategy):
    """A logger was a by-name reference to the tracker, so `log.setLevel(...)` changed
    nothing it could see, and the next checkpoint reused the older blob: level and handlers
    of the first checkpoint came back, verified."""
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "import logging\nlog = logging.getLogger('exp')\n"
                "log.setLevel(logging.INFO)\nfh = logging.FileHandler('exp.log')\nlog.addHandler(fh)"])
    checkpoint(a, store_url, strategy=strategy)
    run_all(a, ["log.setLevel(logging.DEBUG)",
                "log.removeHandler(fh)\nsh = logging.StreamHandler()\nlog.addHandler(sh)"])
    checkpoint(a, store_url, strategy=strategy)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    probe = "[log.level, [type(h).__name__ for h in log.handlers], log.handlers[0] is sh]"
    assert b.value(probe) == a.value(probe) == [10, ["StreamHandler"], True]


@pytest.mark.parametrize("strategy", ["optimal", "ship-all"])
def test_text_files_keep_their_newline_encoding_and_errors(make_kernel, store_url, tmp_path,
                                                           strategy):
    """`newline=` is kept by no attribute of a text file, so it came back as the default:
    lines written to a ``newline='\\r\\n'`` file ended in "\\n" from the restore on, and one
    read with ``newline=''`` (csv's way) lost its "\\r\\n" (both verified)."""
    (tmp_path / "dos.txt").write_bytes(b"a\r\nb\r\nc\r\nd\r\n")
    (tmp_path / "latin.txt").write_bytes("\u00e9t\u00e9\n".encode("latin-1") + b"\xff\n")
    a = make_kernel()
    run_all(a, [chdir(tmp_path),
                "crlf = open('crlf.txt', 'w', newline='\\r\\n')\ncrlf.write('one\\n')\n"
                "raw = open('dos.txt', newline='')\nfirst = raw.readline()\n"
                "mac = open('mac.txt', 'w', newline='\\r')\n"
                "lat = open('latin.txt', encoding='latin-1', errors='strict')\n"
                "u8 = open('latin.txt', encoding='utf-8', errors='replace')\n"
                "out = open('ascii.txt', 'w', encoding='ascii', errors='backslashreplace')"])
    checkpoint(a, store_url, strategy=strategy)
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("crlf.write('two\\n'); crlf.close(); mac.write('x\\ny\\n'); mac.close()\n"
         "out.write('\u00e9\\n'); out.close()")
    assert (tmp_path / "crlf.txt").read_bytes() == b"one\r\ntwo\r\n"
    assert (tmp_path / "mac.txt").read_bytes() == b"x\ry\r"
    assert (tmp_path / "ascii.txt").read_bytes() == b"\\xe9\n"
    assert b.value("(first, raw.readline(), raw.read())") == ["a\r\n", "b\r\n", "c\r\nd\r\n"]
    assert b.value("(lat.encoding, lat.errors, lat.read(), u8.errors, u8.read())") == [
        "latin-1", "strict", "\u00e9t\u00e9\n\u00ff\n", "replace", "\ufffdt\ufffd\n\ufffd\n"]


def test_a_file_written_on_after_the_checkpoint_is_lost_not_written_over(
        make_kernel, store_url, tmp_path):
    """The kernel wrote on after the checkpoint, then died. Re-opened at its place of the
    checkpoint, `log` wrote over the lines that followed it: ``epoch 3`` landed in the middle
    of ``epoch 2 (lost run)`` and the file read "epoch 1, epoch 3, lost run)", while the
    restore verified `log`. The file is no longer the one the checkpoint saw: named as lost,
    and left as it is."""
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "log = open('run.log', 'w')\nlog.write('epoch 1\\n')",
                "n = 1"])
    checkpoint(a, store_url)
    a.ok("log.write('epoch 2 (lost run)\\n'); log.flush()")
    kill9(a)  # (no close: nothing more reaches the file)
    b = make_kernel()
    r = restore(b, store_url)
    assert "run.log" in r["lost"]["log"] and "written after the checkpoint" in r["lost"]["log"]
    assert b.value("n") == 1
    assert (tmp_path / "run.log").read_text() == "epoch 1\nepoch 2 (lost run)\n"


def test_a_file_appended_to_after_the_checkpoint_appends_on(make_kernel, store_url, tmp_path):
    """Append mode writes at the end, wherever the file object was: nothing is written over,
    and the restored log goes on after everything that was written."""
    a = make_kernel()
    run_all(a, [chdir(tmp_path), "log = open('app.log', 'a')\nlog.write('one\\n')"])
    checkpoint(a, store_url)
    a.ok("log.write('two\\n'); log.flush()")
    b = make_kernel()
    assert_verified(restore(b, store_url))
    b.ok("log.write('three\\n'); log.flush()")
    assert (tmp_path / "app.log").read_text() == "one\ntwo\nthree\n"
