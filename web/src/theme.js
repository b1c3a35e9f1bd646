// The editor's look: a quiet writing surface, Markdown shown as lightly styled text,
// and remote carets with their owner's name always visible.

import { EditorView } from '@codemirror/view'
import { HighlightStyle } from '@codemirror/language'
import { tags as t } from '@lezer/highlight'

/** Markdown highlighting: structure by weight and size, marks in muted grey. */
export const markdownHighlight = HighlightStyle.define([
  { tag: t.heading1, fontSize: '1.6em', fontWeight: '700', lineHeight: '1.3' },
  { tag: t.heading2, fontSize: '1.35em', fontWeight: '700' },
  { tag: t.heading3, fontSize: '1.15em', fontWeight: '650' },
  { tag: [t.heading4, t.heading5, t.heading6], fontWeight: '650' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strikethrough, textDecoration: 'line-through' },
  { tag: t.link, color: 'var(--accent)', textDecoration: 'underline', textUnderlineOffset: '2px' },
  { tag: t.url, color: 'var(--muted)' },
  { tag: t.monospace, fontFamily: 'var(--mono)', fontSize: '.9em', backgroundColor: 'var(--code-bg)', borderRadius: '3px' },
  { tag: t.quote, color: 'var(--quote)', fontStyle: 'italic' },
  { tag: [t.processingInstruction, t.meta, t.contentSeparator], color: 'var(--faint)' },
  { tag: t.list, color: 'var(--ink)' }
])

/** Editor chrome; overrides y-codemirror.next's caret label to stay visible. */
export const editorTheme = EditorView.theme({
  '&': {
    color: 'var(--ink)',
    backgroundColor: 'transparent',
    fontSize: '17px'
  },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': {
    fontFamily: 'var(--prose)',
    lineHeight: '1.7',
    overflow: 'visible'
  },
  '.cm-content': {
    padding: '0',
    caretColor: 'var(--ink)',
    minHeight: '60vh'
  },
  '.cm-line': { padding: '0' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--ink)', borderLeftWidth: '2px' },
  '&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, ::selection':
    { backgroundColor: 'var(--selection) !important' },
  '.cm-selectionMatch': { backgroundColor: 'var(--match)' },
  // Out of the flow, so that a remote caret in an empty document sits at its start.
  '.cm-line': { position: 'relative' },
  '.cm-placeholder': { color: 'var(--faint)', fontStyle: 'italic', position: 'absolute', left: '0', right: '0', pointerEvents: 'none' },
  '.cm-ySelectionCaret': {
    borderLeftWidth: '1px',
    borderRightWidth: '1px'
  },
  '.cm-ySelectionCaretDot': { display: 'none' },
  '.cm-ySelectionInfo': {
    opacity: '1',
    top: '-1.35em',
    left: '-1px',
    padding: '1px 5px 2px',
    borderRadius: '4px 4px 4px 0',
    fontFamily: 'var(--ui)',
    fontSize: '11px',
    fontWeight: '600',
    letterSpacing: '.01em',
    lineHeight: '1.2',
    boxShadow: '0 1px 2px rgba(0,0,0,.15)',
    pointerEvents: 'none'
  },
  '.cm-ySelectionCaret:hover > .cm-ySelectionInfo': { opacity: '1' }
})
