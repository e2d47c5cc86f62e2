package k8scc.sample.assettransfer;

import org.hyperledger.fabric.contract.ContractRouter;

/**
 * Entry point of the uber-jar. ContractRouter does all the work; this class exists only
 * because the shim creates contract instances per transaction, so nothing of the sample
 * runs at start-up unless it runs here.
 */
public final class Main {
    private Main() {
    }

    public static void main(final String[] args) throws Exception {
        // Tests look for this line in the pod log to tell that the process started.
        System.out.println("asset-transfer: starting java chaincode");
        ContractRouter.main(args);
    }
}
