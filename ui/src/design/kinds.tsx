// How a step kind looks: a Radix colour scale and a lucide icon per kind. A kind the
// schema adds later (registry.ts reads the kinds from it) gets the neutral look until it
// is given its own here, so the palette and the canvas never miss a kind.
import {
  BellRing,
  Bot,
  Box,
  Clock,
  FileText,
  GitBranch,
  Repeat,
  Sparkles,
  UserCheck,
  Workflow,
  Wrench,
  Zap,
  Layers,
  type LucideIcon,
} from 'lucide-react';

export interface KindLook {
  /** A Radix Themes colour scale name (`--<color>-1` … `--<color>-12` exist). */
  color: string;
  icon: LucideIcon;
  /** A human label for the palette and node headers. */
  label: string;
}

const LOOKS: Record<string, KindLook> = {
  llm: { color: 'violet', icon: Sparkles, label: 'LLM' },
  template: { color: 'blue', icon: FileText, label: 'Template' },
  approval: { color: 'amber', icon: UserCheck, label: 'Approval' },
  switch: { color: 'orange', icon: GitBranch, label: 'Switch' },
  map: { color: 'teal', icon: Layers, label: 'Map' },
  loop: { color: 'cyan', icon: Repeat, label: 'Loop' },
  workflow: { color: 'indigo', icon: Workflow, label: 'Sub-workflow' },
  wait: { color: 'gray', icon: Clock, label: 'Wait' },
  event: { color: 'brown', icon: BellRing, label: 'Event' },
  tool: { color: 'grass', icon: Wrench, label: 'Tool' },
  agent: { color: 'pink', icon: Bot, label: 'Agent' },
  trigger: { color: 'crimson', icon: Zap, label: 'Trigger' },
};

/** The look of `kind`; unknown kinds get a neutral box with the kind's own name. */
export function kindLook(kind: string): KindLook {
  return LOOKS[kind] ?? { color: 'slate', icon: Box, label: kind.charAt(0).toUpperCase() + kind.slice(1) };
}
