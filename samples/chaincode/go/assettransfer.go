package main

import (
	"encoding/json"
	"fmt"

	"github.com/hyperledger/fabric-contract-api-go/v2/contractapi"
)

// Asset is stored as JSON under its ID. DocType lets CouchDB queries (and the
// indexOwner index) tell assets apart from any other state.
type Asset struct {
	DocType        string `json:"docType"`
	ID             string `json:"ID"`
	Color          string `json:"color"`
	Size           int    `json:"size"`
	Owner          string `json:"owner"`
	AppraisedValue int    `json:"appraisedValue"`
}

// AssetTransfer is the contract; every exported method is a transaction.
type AssetTransfer struct {
	contractapi.Contract
}

// trace writes one stdout line per transaction so tests can follow the
// chaincode through its log.
func trace(fn, id string) {
	fmt.Printf("asset-transfer: %s %s\n", fn, id)
}

func (s *AssetTransfer) CreateAsset(ctx contractapi.TransactionContextInterface, id string, color string, size int, owner string, appraisedValue int) error {
	trace("CreateAsset", id)
	exists, err := s.AssetExists(ctx, id)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("asset %s already exists", id)
	}
	return putAsset(ctx, &Asset{DocType: "asset", ID: id, Color: color, Size: size, Owner: owner, AppraisedValue: appraisedValue})
}

func (s *AssetTransfer) ReadAsset(ctx contractapi.TransactionContextInterface, id string) (*Asset, error) {
	trace("ReadAsset", id)
	data, err := ctx.GetStub().GetState(id)
	if err != nil {
		return nil, fmt.Errorf("reading asset %s: %w", id, err)
	}
	if data == nil {
		return nil, fmt.Errorf("asset %s does not exist", id)
	}
	var asset Asset
	if err := json.Unmarshal(data, &asset); err != nil {
		return nil, fmt.Errorf("decoding asset %s: %w", id, err)
	}
	return &asset, nil
}

func (s *AssetTransfer) AssetExists(ctx contractapi.TransactionContextInterface, id string) (bool, error) {
	trace("AssetExists", id)
	data, err := ctx.GetStub().GetState(id)
	if err != nil {
		return false, fmt.Errorf("reading asset %s: %w", id, err)
	}
	return data != nil, nil
}

func (s *AssetTransfer) UpdateAsset(ctx contractapi.TransactionContextInterface, id string, color string, size int, owner string, appraisedValue int) error {
	trace("UpdateAsset", id)
	exists, err := s.AssetExists(ctx, id)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("asset %s does not exist", id)
	}
	return putAsset(ctx, &Asset{DocType: "asset", ID: id, Color: color, Size: size, Owner: owner, AppraisedValue: appraisedValue})
}

// TransferAsset returns the previous owner.
func (s *AssetTransfer) TransferAsset(ctx contractapi.TransactionContextInterface, id string, newOwner string) (string, error) {
	trace("TransferAsset", id)
	asset, err := s.ReadAsset(ctx, id)
	if err != nil {
		return "", err
	}
	oldOwner := asset.Owner
	asset.Owner = newOwner
	return oldOwner, putAsset(ctx, asset)
}

func (s *AssetTransfer) DeleteAsset(ctx contractapi.TransactionContextInterface, id string) error {
	trace("DeleteAsset", id)
	exists, err := s.AssetExists(ctx, id)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("asset %s does not exist", id)
	}
	return ctx.GetStub().DelState(id)
}

func (s *AssetTransfer) GetAllAssets(ctx contractapi.TransactionContextInterface) ([]*Asset, error) {
	trace("GetAllAssets", "")
	iter, err := ctx.GetStub().GetStateByRange("", "")
	if err != nil {
		return nil, err
	}
	defer iter.Close()

	assets := []*Asset{}
	for iter.HasNext() {
		kv, err := iter.Next()
		if err != nil {
			return nil, err
		}
		var asset Asset
		if err := json.Unmarshal(kv.Value, &asset); err != nil {
			return nil, fmt.Errorf("decoding asset %s: %w", kv.Key, err)
		}
		assets = append(assets, &asset)
	}
	return assets, nil
}

func putAsset(ctx contractapi.TransactionContextInterface, asset *Asset) error {
	data, err := json.Marshal(asset)
	if err != nil {
		return err
	}
	return ctx.GetStub().PutState(asset.ID, data)
}
