// An agent step's transcript in the run panel's drawer: each model call (iteration, model,
// strategy, text, the tool calls it asked for, tokens, duration) and each tool call
// (name, arguments, result, whether it failed, duration), in order.
import { Badge, Code, Flex, Text } from '@radix-ui/themes';
import type { TranscriptEntry } from '../bindings';

function json(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

export function Transcript({ entries }: { entries: TranscriptEntry[] }) {
  return (
    <ol className="transcript" data-testid="transcript">
      {entries.map((e, i) =>
        e.type === 'model' ? (
          <li key={i} className="model" data-testid={`transcript-model-${i}`}>
            <Flex gap="2" align="center" wrap="wrap">
              <Badge color="pink">model call {e.iteration}</Badge>
              <Code size="1" variant="ghost" data-testid={`transcript-model-${i}-model`}>{e.model}</Code>
              <Text size="1" color="gray">
                {e.strategy} · {e.prompt_tokens} in, {e.completion_tokens} out · {e.duration_ms} ms
              </Text>
            </Flex>
            {e.text && <pre data-testid={`transcript-model-${i}-text`}>{e.text}</pre>}
            {e.tool_calls.length > 0 && (
              <Text as="div" size="1" color="gray" data-testid={`transcript-model-${i}-calls`}>
                asks for: {e.tool_calls.map((c) => json(c)).join(', ')}
              </Text>
            )}
          </li>
        ) : (
          <li key={i} className="tool" data-testid={`transcript-tool-${i}`}>
            <Flex gap="2" align="center" wrap="wrap">
              <Badge color={e.ok ? 'grass' : 'red'}>{e.ok ? 'tool call' : 'tool call failed'}</Badge>
              <Code size="1" variant="ghost" data-testid={`transcript-tool-${i}-name`}>{e.name}</Code>
              <Text size="1" color="gray">{e.duration_ms} ms</Text>
            </Flex>
            <Text as="div" size="1" color="gray">arguments</Text>
            <pre data-testid={`transcript-tool-${i}-args`}>{json(e.arguments)}</pre>
            <Text as="div" size="1" color="gray">result</Text>
            <pre data-testid={`transcript-tool-${i}-result`}>{e.result}</pre>
          </li>
        ),
      )}
    </ol>
  );
}
