// Command asset-transfer is the k8scc Go sample chaincode. It runs in
// peer-as-server mode: the shim dials -peer.address and reads the CORE_*
// environment that Fabric's Docker launcher (and k8scc) provide.
package main

import (
	"fmt"
	"log"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

func main() {
	cc, err := contractapi.NewChaincode(&AssetTransfer{})
	if err != nil {
		log.Fatalf("asset-transfer: cannot create chaincode: %v", err)
	}
	// Tests look for this line in the pod log to tell that the process started.
	fmt.Println("asset-transfer: starting go chaincode")
	if err := cc.Start(); err != nil {
		log.Fatalf("asset-transfer: chaincode stopped: %v", err)
	}
}
