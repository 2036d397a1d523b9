// The rule editor: CodeMirror 6 with a Rhai grammar (the C-like legacy mode
// configured with Rhai's keywords and leadscore's rule functions), TOML for
// tiers.toml, and lint diagnostics for compile errors reported by the engine.

import { EditorState } from '@codemirror/state';
import {
  EditorView,
  keymap,
  lineNumbers,
  highlightActiveLine,
  highlightActiveLineGutter,
  drawSelection,
} from '@codemirror/view';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import {
  StreamLanguage,
  syntaxHighlighting,
  defaultHighlightStyle,
  bracketMatching,
  indentOnInput,
} from '@codemirror/language';
import { lintGutter, setDiagnostics, lintKeymap } from '@codemirror/lint';
import { clike } from '@codemirror/legacy-modes/mode/clike';
import { toml } from '@codemirror/legacy-modes/mode/toml';

const words = (text) => Object.fromEntries(text.split(' ').map((w) => [w, true]));

const rhaiMode = clike({
  name: 'rhai',
  keywords: words(
    'let const if else switch while loop do until for in return break continue throw try catch fn private global is_shared is_def_var is_def_fn this',
  ),
  builtin: words(
    'contact add disqualify tag print debug answer has_answer answers utm first_utm email_domain is_free_email parse_number iclosed_disqualified disqualifying_groups now days_since first_seen calls type_of to_lower to_upper contains starts_with ends_with len trim split replace to_int to_float',
  ),
  atoms: words('true false'),
  blockKeywords: words('if else while loop for do try catch switch fn'),
  defKeywords: words('fn let const'),
  typeFirstDefinitions: false,
  indentStatements: false,
  hooks: {
    // Interpolated strings: `text ${expr}`.
    '`': (stream) => {
      let escaped = false;
      let ch;
      while ((ch = stream.next()) != null) {
        if (ch === '`' && !escaped) break;
        escaped = !escaped && ch === '\\';
      }
      return 'string';
    },
    // Object map literals: #{ … }.
    '#': (stream) => {
      stream.eat('{');
      return 'bracket';
    },
  },
  languageData: { commentTokens: { line: '//', block: { open: '/*', close: '*/' } } },
});

const rhaiLanguage = StreamLanguage.define(rhaiMode);
const tomlLanguage = StreamLanguage.define(toml);

const theme = EditorView.theme({
  '&': { fontSize: '14px', border: '1px solid var(--line)', borderRadius: '6px', background: '#fff' },
  '&.cm-focused': { outline: '3px solid var(--focus)', outlineOffset: '1px' },
  '.cm-scroller': { fontFamily: 'var(--mono)', lineHeight: '1.5' },
  '.cm-content': { minHeight: '18rem' },
  '.cm-gutters': { background: '#f6f7f9', borderRight: '1px solid var(--line)', color: '#5f6670' },
});

/**
 * An editor state for one file. `onChange(text)` is called after each edit.
 */
export function createState(fileName, text, onChange) {
  const language = fileName.endsWith('.toml') ? tomlLanguage : rhaiLanguage;
  return EditorState.create({
    doc: text,
    extensions: [
      lineNumbers(),
      highlightActiveLineGutter(),
      history(),
      drawSelection(),
      indentOnInput(),
      bracketMatching(),
      highlightActiveLine(),
      language,
      syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
      lintGutter(),
      theme,
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ 'aria-label': `Contents of ${fileName}` }),
      // Tab indents; Escape then Tab leaves the editor (CodeMirror's escape hatch).
      keymap.of([indentWithTab, ...defaultKeymap, ...historyKeymap, ...lintKeymap]),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) onChange(update.state.doc.toString());
      }),
    ],
  });
}

export function createView(parent) {
  return new EditorView({ parent, state: EditorState.create({ doc: '' }) });
}

/**
 * Compile errors ({line, column, message}, 1-based; 0 when unknown) as
 * lint diagnostics on a state; returns the new state.
 */
export function withDiagnostics(state, errors) {
  const doc = state.doc;
  const diagnostics = errors.map((e) => {
    const lineNo = Math.min(Math.max(Number(e.line) || 1, 1), doc.lines);
    const line = doc.line(lineNo);
    const col = Math.max((Number(e.column) || 1) - 1, 0);
    const from = Math.min(line.from + col, line.to);
    const to = from < line.to ? Math.max(from + 1, wordEnd(line.text, from - line.from) + line.from) : from;
    const where = e.line ? `line ${e.line}${e.column ? `, column ${e.column}` : ''}: ` : '';
    return { from, to: Math.min(to, line.to), severity: 'error', message: `${where}${e.message}`, source: 'leadscore' };
  });
  return state.update(setDiagnostics(state, diagnostics)).state;
}

function wordEnd(text, start) {
  let i = start;
  while (i < text.length && /[\w$]/.test(text[i])) i += 1;
  return i === start ? start + 1 : i;
}
