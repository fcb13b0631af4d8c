import { test } from 'node:test'
import assert from 'node:assert/strict'
import { findClosestQuality, parseQualities, createLoader } from '../index.js'

// Spec 5.3 (Next's find-closest-quality unit test).
const table = [
  [undefined, undefined, 75],
  [35, [10, 30, 50], 30],
  [40, [10, 30, 50], 30], // tie -> lower
  [41, [10, 30, 50], 50],
  [undefined, [25, 60, 100], 60],
  [14, [100, 10, 75, 15], 15],
]

for (const [quality, qualities, expected] of table) {
  test(`findClosestQuality(${quality}, ${JSON.stringify(qualities)}) = ${expected}`, () => {
    assert.equal(findClosestQuality(quality, qualities), expected)
  })
}

test('findClosestQuality: reduce starts at qualities[0], ties keep the earlier entry', () => {
  assert.equal(findClosestQuality(40, [50, 30]), 50)
  assert.equal(findClosestQuality(40, [30, 50]), 30)
})

test('findClosestQuality: 0, NaN and junk mean 75 (Next: quality || 75)', () => {
  assert.equal(findClosestQuality(0, [70, 80, 100]), 70)
  assert.equal(findClosestQuality(NaN, [74, 76]), 74)
  assert.equal(findClosestQuality('junk'), 75)
  assert.equal(findClosestQuality(null), 75)
})

test('findClosestQuality without a list rounds and clamps to 1..100', () => {
  assert.equal(findClosestQuality(50), 50)
  assert.equal(findClosestQuality(150), 100)
  assert.equal(findClosestQuality(-3), 1)
  assert.equal(findClosestQuality(42.6, []), 43)
})

test('parseQualities keeps integers 1..100, de-duplicates, sorts, ignores junk', () => {
  assert.deepEqual(parseQualities('75'), [75])
  assert.deepEqual(parseQualities(' 100, 50 ,75,50'), [50, 75, 100])
  assert.deepEqual(parseQualities('0,101,-5,abc,7.5,,1e2,60'), [60])
  assert.deepEqual(parseQualities([90, '40', 40, 3.5, null]), [40, 90])
  assert.deepEqual(parseQualities(80), [80])
})

test('parseQualities falls back to [75] when nothing valid is left', () => {
  for (const v of [undefined, null, '', ' , ', 'junk', [], [0, 200]]) {
    assert.deepEqual(parseQualities(v), [75], String(v))
  }
})

test('loader snaps quality to the allowed list', () => {
  const q = (loader, quality) => new URL(loader({ src: '/a.png', width: 640, quality }), 'http://x').searchParams.get('q')
  const def = createLoader()
  for (const quality of [undefined, 1, 50, 75, 100]) assert.equal(q(def, quality), '75')
  const three = createLoader({ qualities: [10, 30, 50] })
  assert.equal(q(three, 35), '30')
  assert.equal(q(three, 40), '30')
  assert.equal(q(three, 41), '50')
  assert.equal(q(three, undefined), '50')
  const unsorted = createLoader({ qualities: [100, 10, 75, 15] })
  assert.equal(q(unsorted, 14), '15')
  assert.equal(q(createLoader({ qualities: '25,60,100' }), undefined), '60')
})
