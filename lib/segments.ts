/**
 * Channel segments seen from outside, for the `sharmipc list | inspect | clean` commands: read
 * by the native side (`crates/sharm-core/src/inspect.rs`) without attaching, with the layout of
 * `layout.rs`. Linux only.
 *
 * @packageDocumentation
 */
import { fromNative } from './errors'
import { native as binding } from './internal/binding'

export type SegmentInfo = ReturnType<typeof binding.listSegments>[number]

/** Every channel segment on this machine that this user can read. */
export function listSegments(): SegmentInfo[] {
  try {
    return binding.listSegments()
  } catch (e) {
    throw fromNative(e)
  }
}

/** The segment of channel `name` (or an OS name such as `/sharm.x`), or `null` if there is none. */
export function inspectSegment(name: string): SegmentInfo | null {
  try {
    return binding.inspectSegment(name)
  } catch (e) {
    throw fromNative(e)
  }
}

/**
 * What {@link cleanSegment} did: `removed`, or left it alone because it is `live` (with who holds
 * it), `busy` (being created or removed), or `foreign` (not a segment of this version).
 */
export type CleanResult =
  { result: 'removed' } | { result: 'live'; holders: string } | { result: 'busy' } | { result: 'foreign'; what: string }

/** Removes the segment of channel `name` (or an OS name) unless a live process holds a side. */
export function cleanSegment(name: string): CleanResult {
  let r: string
  try {
    r = binding.cleanSegment(name)
  } catch (e) {
    throw fromNative(e)
  }
  if (r === 'removed' || r === 'busy') return { result: r }
  if (r.startsWith('foreign: ')) return { result: 'foreign', what: r.slice('foreign: '.length) }
  return { result: 'live', holders: r.replace(/^live: /, '') }
}
