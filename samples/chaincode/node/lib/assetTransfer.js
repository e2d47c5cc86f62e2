'use strict';

const { Contract } = require('fabric-contract-api');

// One stdout line per transaction lets tests follow the chaincode through its log.
function trace(fn, id) {
    console.log(`asset-transfer: ${fn} ${id}`);
}

function toAsset(id, color, size, owner, appraisedValue) {
    // docType lets CouchDB queries (and the indexOwner index) tell assets apart.
    return {
        docType: 'asset',
        ID: id,
        color,
        size: Number(size),
        owner,
        appraisedValue: Number(appraisedValue),
    };
}

class AssetTransfer extends Contract {
    constructor() {
        super('AssetTransfer');
    }

    async CreateAsset(ctx, id, color, size, owner, appraisedValue) {
        trace('CreateAsset', id);
        if (await this.#exists(ctx, id)) {
            throw new Error(`asset ${id} already exists`);
        }
        const asset = toAsset(id, color, size, owner, appraisedValue);
        await this.#put(ctx, asset);
        return JSON.stringify(asset);
    }

    async ReadAsset(ctx, id) {
        trace('ReadAsset', id);
        const data = await ctx.stub.getState(id);
        if (!data || data.length === 0) {
            throw new Error(`asset ${id} does not exist`);
        }
        return data.toString();
    }

    async AssetExists(ctx, id) {
        trace('AssetExists', id);
        return this.#exists(ctx, id);
    }

    async UpdateAsset(ctx, id, color, size, owner, appraisedValue) {
        trace('UpdateAsset', id);
        if (!(await this.#exists(ctx, id))) {
            throw new Error(`asset ${id} does not exist`);
        }
        await this.#put(ctx, toAsset(id, color, size, owner, appraisedValue));
    }

    // Returns the previous owner.
    async TransferAsset(ctx, id, newOwner) {
        trace('TransferAsset', id);
        const asset = JSON.parse(await this.ReadAsset(ctx, id));
        const oldOwner = asset.owner;
        asset.owner = newOwner;
        await this.#put(ctx, asset);
        return oldOwner;
    }

    async DeleteAsset(ctx, id) {
        trace('DeleteAsset', id);
        if (!(await this.#exists(ctx, id))) {
            throw new Error(`asset ${id} does not exist`);
        }
        await ctx.stub.deleteState(id);
    }

    async GetAllAssets(ctx) {
        trace('GetAllAssets', '');
        const assets = [];
        for await (const kv of ctx.stub.getStateByRange('', '')) {
            assets.push(JSON.parse(Buffer.from(kv.value).toString('utf8')));
        }
        return JSON.stringify(assets);
    }

    async #exists(ctx, id) {
        const data = await ctx.stub.getState(id);
        return Boolean(data && data.length > 0);
    }

    async #put(ctx, asset) {
        await ctx.stub.putState(asset.ID, Buffer.from(JSON.stringify(asset)));
    }
}

module.exports = AssetTransfer;
