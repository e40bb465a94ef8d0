// The workflow as YAML beside the canvas, kept in sync both ways: an edit on the canvas or
// in the inspector rewrites the text (when the text is not being edited), and an edit of
// the text, once it parses, replaces the graph (store.applyText: the document is the
// text, so its comments and order are what is saved). YAML syntax errors and the engine's
// located diagnostics are squiggles in the text.
import { useEffect, useMemo, useRef, useState } from 'react';
import { Flex, Text } from '@radix-ui/themes';
import { useEditor } from '../store';
import { CodeEditor, type EditorProblem } from './CodeEditor';

/** The offset of a 1-based line and column in `text`. */
function offsetOf(text: string, line: number, column: number): number {
  let at = 0;
  for (let l = 1; l < line; l++) {
    const next = text.indexOf('\n', at);
    if (next < 0) return text.length;
    at = next + 1;
  }
  return Math.min(text.length, at + Math.max(0, column - 1));
}

export function YamlView() {
  const nodes = useEditor((s) => s.nodes);
  const edges = useEditor((s) => s.edges);
  const doc = useEditor((s) => s.doc);
  const diagnostics = useEditor((s) => s.diagnostics);
  const [text, setText] = useState(() => useEditor.getState().serialize());
  const [syntax, setSyntax] = useState<{ line: number; column: number; message: string }[]>([]);
  const editing = useRef(false);
  const timer = useRef<ReturnType<typeof setTimeout> | null>(null);

  // Canvas → text, unless the user is typing here (their text is the source then).
  useEffect(() => {
    if (!editing.current) setText(useEditor.getState().serialize());
  }, [nodes, edges, doc]);
  useEffect(() => () => {
    if (timer.current) clearTimeout(timer.current);
  }, []);

  const problems = useMemo<EditorProblem[]>(() => {
    // A syntax error is underlined to the end of its line (at least one character).
    const out: EditorProblem[] = syntax.map((e) => {
      let from = offsetOf(text, e.line, e.column);
      const eol = text.indexOf('\n', from);
      const to = eol < 0 ? text.length : eol;
      if (to <= from) {
        // At the end of a line or of the text: the last visible character before it.
        from = Math.max(0, from - 1);
        while (from > 0 && text[from] === '\n') from--;
        return { from, to: from + 1, message: e.message };
      }
      return { from, to, message: e.message };
    });
    if (!syntax.length) {
      for (const d of diagnostics) {
        if (!d.span) continue;
        const from = offsetOf(text, d.span.line, d.span.column);
        const end = text.indexOf('\n', from);
        out.push({ from, to: end < 0 ? text.length : end, message: d.message });
      }
    }
    return out;
  }, [syntax, diagnostics, text]);

  return (
    <aside className="yaml-view" data-testid="yaml-view" aria-label="Workflow YAML">
      <Flex justify="between" align="center" className="yaml-head">
        <Text size="2" weight="bold">YAML</Text>
        <Text size="1" color={syntax.length ? 'red' : 'gray'} data-testid="yaml-status" role="status">
          {syntax.length ? `line ${syntax[0].line}: ${syntax[0].message}` : 'in sync with the canvas'}
        </Text>
      </Flex>
      <CodeEditor
        language="yaml"
        testId="yaml-text"
        label="Workflow YAML"
        value={text}
        gutter
        minLines={20}
        maxHeight={2000}
        problems={problems}
        onChange={(v) => {
          editing.current = true;
          setText(v);
          if (timer.current) clearTimeout(timer.current);
          timer.current = setTimeout(() => {
            setSyntax(useEditor.getState().applyText(v));
          }, 300);
        }}
        onBlur={() => {
          editing.current = false;
        }}
      />
    </aside>
  );
}
