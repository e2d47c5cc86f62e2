'use strict';

const AssetTransfer = require('./lib/assetTransfer');

// Tests look for this line in the pod log to tell that the process started.
console.log('asset-transfer: starting node chaincode');

// fabric-chaincode-node loads the contracts listed here from the package "main".
module.exports.AssetTransfer = AssetTransfer;
module.exports.contracts = [AssetTransfer];
