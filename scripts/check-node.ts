// Guard used by `npm test`: the suite must run on the pinned Node 24 LTS.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(`expected Node 24 (from the "node" devDependency), running ${process.version}`);
  process.exit(1);
}
