#!/usr/bin/env bash
# prints the Next.js peer's version line
. "$(dirname "$0")/_lib.sh"
cd "$BENCH_CACHE/next" && node -e '
const fs=require("fs"); const v=(p)=>JSON.parse(fs.readFileSync(p)).version;
const s=require("sharp");
console.log(`next ${v("node_modules/next/package.json")}, sharp ${s.versions.sharp}, libvips ${s.versions.vips}, node ${process.versions.node}`)'
