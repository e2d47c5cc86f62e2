package k8scc.sample.assettransfer;

import java.util.ArrayList;
import java.util.List;

import org.hyperledger.fabric.contract.Context;
import org.hyperledger.fabric.contract.ContractInterface;
import org.hyperledger.fabric.contract.annotation.Contract;
import org.hyperledger.fabric.contract.annotation.Default;
import org.hyperledger.fabric.contract.annotation.Info;
import org.hyperledger.fabric.contract.annotation.Transaction;
import org.hyperledger.fabric.shim.ChaincodeException;
import org.hyperledger.fabric.shim.ChaincodeStub;
import org.hyperledger.fabric.shim.ledger.KeyValue;
import org.hyperledger.fabric.shim.ledger.QueryResultsIterator;
import org.json.JSONArray;
import org.json.JSONObject;

@Contract(name = "AssetTransfer", info = @Info(title = "k8scc asset transfer", version = "1.0.0"))
@Default
public final class AssetTransfer implements ContractInterface {

    // One stdout line per transaction lets tests follow the chaincode through its log.
    private static void trace(final String fn, final String id) {
        System.out.println("asset-transfer: " + fn + " " + id);
    }

    private static JSONObject asset(final String id, final String color, final int size,
            final String owner, final int appraisedValue) {
        // docType lets CouchDB queries (and the indexOwner index) tell assets apart.
        return new JSONObject()
                .put("docType", "asset")
                .put("ID", id)
                .put("color", color)
                .put("size", size)
                .put("owner", owner)
                .put("appraisedValue", appraisedValue);
    }

    private static boolean exists(final ChaincodeStub stub, final String id) {
        final String data = stub.getStringState(id);
        return data != null && !data.isEmpty();
    }

    private static void put(final ChaincodeStub stub, final JSONObject asset) {
        stub.putStringState(asset.getString("ID"), asset.toString());
    }

    @Transaction(intent = Transaction.TYPE.SUBMIT)
    public String CreateAsset(final Context ctx, final String id, final String color, final int size,
            final String owner, final int appraisedValue) {
        trace("CreateAsset", id);
        final ChaincodeStub stub = ctx.getStub();
        if (exists(stub, id)) {
            throw new ChaincodeException("asset " + id + " already exists");
        }
        final JSONObject created = asset(id, color, size, owner, appraisedValue);
        put(stub, created);
        return created.toString();
    }

    @Transaction(intent = Transaction.TYPE.EVALUATE)
    public String ReadAsset(final Context ctx, final String id) {
        trace("ReadAsset", id);
        final String data = ctx.getStub().getStringState(id);
        if (data == null || data.isEmpty()) {
            throw new ChaincodeException("asset " + id + " does not exist");
        }
        return data;
    }

    @Transaction(intent = Transaction.TYPE.EVALUATE)
    public boolean AssetExists(final Context ctx, final String id) {
        trace("AssetExists", id);
        return exists(ctx.getStub(), id);
    }

    @Transaction(intent = Transaction.TYPE.SUBMIT)
    public void UpdateAsset(final Context ctx, final String id, final String color, final int size,
            final String owner, final int appraisedValue) {
        trace("UpdateAsset", id);
        final ChaincodeStub stub = ctx.getStub();
        if (!exists(stub, id)) {
            throw new ChaincodeException("asset " + id + " does not exist");
        }
        put(stub, asset(id, color, size, owner, appraisedValue));
    }

    /** Returns the previous owner. */
    @Transaction(intent = Transaction.TYPE.SUBMIT)
    public String TransferAsset(final Context ctx, final String id, final String newOwner) {
        trace("TransferAsset", id);
        final JSONObject current = new JSONObject(ReadAsset(ctx, id));
        final String oldOwner = current.getString("owner");
        put(ctx.getStub(), current.put("owner", newOwner));
        return oldOwner;
    }

    @Transaction(intent = Transaction.TYPE.SUBMIT)
    public void DeleteAsset(final Context ctx, final String id) {
        trace("DeleteAsset", id);
        final ChaincodeStub stub = ctx.getStub();
        if (!exists(stub, id)) {
            throw new ChaincodeException("asset " + id + " does not exist");
        }
        stub.delState(id);
    }

    @Transaction(intent = Transaction.TYPE.EVALUATE)
    public String GetAllAssets(final Context ctx) throws Exception {
        trace("GetAllAssets", "");
        final List<JSONObject> assets = new ArrayList<>();
        try (QueryResultsIterator<KeyValue> results = ctx.getStub().getStateByRange("", "")) {
            for (final KeyValue kv : results) {
                assets.add(new JSONObject(kv.getStringValue()));
            }
        }
        return new JSONArray(assets).toString();
    }
}
