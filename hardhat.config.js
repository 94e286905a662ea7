// Hardhat 2 configuration that works offline: `npx hardhat compile` uses the npm `solc` (the same
// pinned soljson that coordinator/compile.py uses) instead of downloading a compiler, with the same
// settings (optimizer 200 runs, via-IR, cancun), and writes to the git-ignored artifacts-hardhat/ and
// cache/. The committed artifacts come from `python -m coordinator.compile`, not from here.
// `npx hardhat node` serves a local chain (chain id 31337) as an alternative to anvil.
const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = require("solc/package.json").version;

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    // only the pinned npm compiler exists offline
    throw new Error(`solc ${args.solcVersion} requested but only the npm solc ${SOLC_VERSION} is installed`);
  }
  const solc = require("solc");
  return {
    compilerPath: path.join(path.dirname(require.resolve("solc")), "soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: solc.version(),
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      viaIR: true,
      evmVersion: "cancun",
    },
  },
  paths: {
    sources: "./contracts",
    artifacts: "./artifacts-hardhat",
    cache: "./cache",
  },
  networks: {
    hardhat: { chainId: 31337 },
  },
};
