// The code editor of prompts, templates and the YAML view: CodeMirror 6 with minijinja
// (the Jinja grammar of @codemirror/lang-jinja) or YAML highlighting, `{{` completion of
// the variables a template may read, and diagnostics (the validator's errors) shown as
// squiggles with their message. Colours are the Radix theme tokens, so the editor
// follows the light and dark themes. Tab is left to move the focus (keyboard use).
import { useEffect, useRef } from 'react';
import { EditorState, Annotation, type Extension } from '@codemirror/state';
import { EditorView, keymap, placeholder as placeholderExt, drawSelection, highlightActiveLine, lineNumbers } from '@codemirror/view';
import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { autocompletion, completionKeymap, type CompletionContext, type CompletionResult } from '@codemirror/autocomplete';
import { HighlightStyle, syntaxHighlighting, bracketMatching } from '@codemirror/language';
import { lintGutter, setDiagnostics, type Diagnostic as CmDiagnostic } from '@codemirror/lint';
import { jinja } from '@codemirror/lang-jinja';
import { yaml } from '@codemirror/lang-yaml';
import { tags } from '@lezer/highlight';

/** A problem to underline: a range of the text (whole text when absent) and its message. */
export interface EditorProblem {
  from?: number;
  to?: number;
  message: string;
  severity?: 'error' | 'warning' | 'info';
}

const external = Annotation.define<boolean>();

const highlight = HighlightStyle.define([
  { tag: [tags.keyword, tags.controlKeyword, tags.operatorKeyword], color: 'var(--violet-11)' },
  { tag: [tags.brace, tags.bracket], color: 'var(--accent-11)', fontWeight: '600' },
  { tag: [tags.variableName, tags.propertyName], color: 'var(--blue-11)' },
  { tag: [tags.string, tags.special(tags.string)], color: 'var(--green-11)' },
  { tag: [tags.number, tags.bool, tags.null], color: 'var(--orange-11)' },
  { tag: [tags.comment, tags.lineComment, tags.blockComment], color: 'var(--gray-11)', fontStyle: 'italic' },
  { tag: [tags.definition(tags.propertyName), tags.attributeName], color: 'var(--crimson-11)' },
  { tag: tags.invalid, color: 'var(--red-11)' },
]);

const theme = EditorView.theme({
  '&': {
    fontSize: 'var(--font-size-1)',
    border: '1px solid var(--gray-a7)',
    borderRadius: 'var(--radius-2)',
    backgroundColor: 'var(--color-surface)',
    color: 'var(--gray-12)',
  },
  '&.cm-focused': { outline: '2px solid var(--focus-8)', outlineOffset: '-1px' },
  '.cm-content': { fontFamily: 'var(--code-font-family)', caretColor: 'var(--gray-12)', padding: '6px 0' },
  '.cm-scroller': { fontFamily: 'var(--code-font-family)', lineHeight: '1.5' },
  '.cm-gutters': { backgroundColor: 'var(--gray-2)', color: 'var(--gray-11)', border: 'none' },
  '.cm-activeLine': { backgroundColor: 'var(--gray-a2)' },
  '.cm-placeholder': { color: 'var(--gray-11)' },
  '&.cm-focused .cm-selectionBackground, .cm-selectionBackground': { backgroundColor: 'var(--accent-a5) !important' },
  '.cm-tooltip': { backgroundColor: 'var(--color-panel-solid)', border: '1px solid var(--gray-a6)', borderRadius: 'var(--radius-2)', color: 'var(--gray-12)' },
  '.cm-tooltip-autocomplete ul li[aria-selected]': { backgroundColor: 'var(--accent-a5)', color: 'var(--gray-12)' },
  '.cm-tooltip-autocomplete ul li': { fontFamily: 'var(--code-font-family)', fontSize: 'var(--font-size-1)' },
  '.cm-diagnostic': { fontFamily: 'var(--default-font-family)' },
});

/**
 * Completes `{{ …` with whole expressions (`{{ inputs.topic }}`, `{{ steps.a.output }}`):
 * the options whose name contains what was typed, replacing from the braces on (and a
 * closing `}}` already there).
 */
function variableCompletion(variables: () => string[]) {
  return (context: CompletionContext): CompletionResult | null => {
    const match = context.matchBefore(/\{\{[\w. ]*$/);
    if (!match) return null;
    const typed = match.text.slice(2).trim();
    const after = context.state.sliceDoc(context.pos, context.pos + 4);
    const closing = /^\s*\}\}/.exec(after);
    const options = variables()
      .filter((v) => v.replace(/[{} ]/g, '').includes(typed))
      .map((v) => ({ label: v, type: 'variable', apply: v }));
    if (!options.length) return null;
    return { from: match.from, to: context.pos + (closing ? closing[0].length : 0), options, filter: false };
  };
}

export function CodeEditor({
  value,
  onChange,
  language,
  variables,
  problems,
  testId,
  label,
  placeholder,
  minLines = 3,
  maxHeight = 320,
  gutter = false,
  onBlur,
}: {
  value: string;
  onChange(v: string): void;
  language: 'jinja' | 'yaml';
  /** The `{{ … }}` expressions to complete. */
  variables?: string[];
  problems?: EditorProblem[];
  testId: string;
  label: string;
  placeholder?: string;
  minLines?: number;
  maxHeight?: number;
  gutter?: boolean;
  onBlur?(): void;
}) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const latest = useRef({ onChange, variables: variables ?? [], onBlur });
  latest.current = { onChange, variables: variables ?? [], onBlur };

  useEffect(() => {
    if (!host.current) return;
    const extensions: Extension[] = [
      history(),
      drawSelection(),
      bracketMatching(),
      highlightActiveLine(),
      syntaxHighlighting(highlight),
      language === 'jinja' ? jinja() : yaml(),
      keymap.of([...completionKeymap, ...defaultKeymap, ...historyKeymap]),
      EditorView.lineWrapping,
      theme,
      EditorView.contentAttributes.of({ id: testId, 'data-testid': testId, 'aria-label': label, 'aria-multiline': 'true', role: 'textbox' }),
      EditorView.theme({ '.cm-content': { minHeight: `${minLines * 1.5}em` }, '.cm-scroller': { maxHeight: `${maxHeight}px`, overflow: 'auto' } }),
      EditorView.updateListener.of((u) => {
        if (u.docChanged && !u.transactions.some((t) => t.annotation(external))) latest.current.onChange(u.state.doc.toString());
        if (u.focusChanged && !u.view.hasFocus) latest.current.onBlur?.();
      }),
    ];
    if (gutter) extensions.push(lineNumbers(), lintGutter());
    if (placeholder) extensions.push(placeholderExt(placeholder));
    if (language === 'jinja') {
      extensions.push(autocompletion({ override: [variableCompletion(() => latest.current.variables)], icons: false, interactionDelay: 0 }));
    }
    const v = new EditorView({ parent: host.current, state: EditorState.create({ doc: value, extensions }) });
    view.current = v;
    return () => {
      v.destroy();
      view.current = null;
    };
    // The editor is made once per field; value changes are dispatched below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [language, testId]);

  // A value changed from outside (undo, another control, the canvas) replaces the text.
  useEffect(() => {
    const v = view.current;
    if (!v) return;
    const current = v.state.doc.toString();
    if (current !== value) {
      v.dispatch({ changes: { from: 0, to: current.length, insert: value }, annotations: external.of(true) });
    }
  }, [value]);

  useEffect(() => {
    const v = view.current;
    if (!v) return;
    const len = v.state.doc.length;
    const diags: CmDiagnostic[] = (problems ?? []).map((p) => {
      const from = Math.min(p.from ?? 0, len);
      const to = Math.min(Math.max(p.to ?? len, from), len);
      return { from, to, message: p.message, severity: p.severity ?? 'error' };
    });
    v.dispatch(setDiagnostics(v.state, diags));
  }, [problems, value]);

  return <div ref={host} className="code-editor" data-testid={`${testId}-editor`} />;
}
