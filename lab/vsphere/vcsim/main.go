// A vCenter simulator for the lab: govmomi's vcsim (Debian's library) plus the
// calls vcsim lacks, answered from real state by lab/vsphere/cbt.py:
// QueryChangedDiskAreas from QEMU dirty bitmaps of the lab disks, and disk
// change ids and point-in-time views made when a snapshot is taken.
//
// vcsim's objects cannot be wrapped (its code asserts their concrete types),
// so a small SOAP middleware in front of its handler does the extra work.
package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"html"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // vcsim's REST endpoints: tagging (vapi.go adds the JSON-RPC ones)
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

var helper []string

// lab runs the helper and decodes its JSON answer; {"fault": "..."} becomes an error.
func lab(args ...string) (map[string]interface{}, error) {
	cmd := exec.Command(helper[0], append(helper[1:], args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lab helper %v: %v", args, err)
	}
	var answer map[string]interface{}
	if err := json.Unmarshal(out, &answer); err != nil {
		return nil, fmt.Errorf("lab helper %v: bad answer %q", args, out)
	}
	if fault, ok := answer["fault"].(string); ok {
		return answer, fmt.Errorf("%s", fault)
	}
	return answer, nil
}

// request holds the few fields of the SOAP calls the middleware looks at.
type request struct {
	This        string `xml:"_this"`
	Snapshot    string `xml:"snapshot"`
	DeviceKey   string `xml:"deviceKey"`
	StartOffset string `xml:"startOffset"`
	ChangeID    string `xml:"changeId"`
}

var methodRe = regexp.MustCompile(`<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)[\s>]`)

func parse(body []byte) (string, request) {
	var req request
	m := methodRe.FindSubmatch(body)
	if m == nil {
		return "", req
	}
	method := string(m[1])
	start := bytes.Index(body, m[0][bytes.LastIndex(m[0], []byte("<")):])
	dec := xml.NewDecoder(bytes.NewReader(body[start:]))
	_ = dec.Decode(&req)
	return method, req
}

const envelope = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>`

func reply(w http.ResponseWriter, status int, inner string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, envelope, inner)
}

func fault(w http.ResponseWriter, msg string) {
	// What vCenter answers for a change id it cannot serve (e.g. after a CBT reset).
	reply(w, http.StatusInternalServerError, fmt.Sprintf(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode>`+
		`<faultstring>%s</faultstring><detail><InvalidArgumentFault xmlns="urn:vim25" xsi:type="InvalidArgument">`+
		`<invalidProperty>changeId</invalidProperty></InvalidArgumentFault></detail></soapenv:Fault>`, html.EscapeString(msg)))
}

func queryChangedDiskAreas(w http.ResponseWriter, req request) {
	answer, err := lab("query", req.This, req.Snapshot, req.DeviceKey, req.StartOffset, req.ChangeID)
	if err != nil {
		fault(w, err.Error())
		return
	}
	var areas strings.Builder
	for _, area := range answer["areas"].([]interface{}) {
		pair := area.([]interface{})
		fmt.Fprintf(&areas, "<changedArea><start>%d</start><length>%d</length></changedArea>",
			int64(pair[0].(float64)), int64(pair[1].(float64)))
	}
	reply(w, http.StatusOK, fmt.Sprintf(`<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval>`+
		`<startOffset>%d</startOffset><length>%d</length>%s</returnval></QueryChangedDiskAreasResponse>`,
		int64(answer["start"].(float64)), int64(answer["length"].(float64)), areas.String()))
}

// setChangeIDs gives each disk the change id the lab answered for it.
func setChangeIDs(devices []types.BaseVirtualDevice, ids map[string]interface{}) []types.BaseVirtualDevice {
	return withBacking(devices, ids, func(backing *types.VirtualDiskFlatVer2BackingInfo, id string) {
		backing.ChangeId = id
	})
}

// setFiles names each disk's file, as ESXi does when a snapshot starts a delta or a removal merges one.
func setFiles(devices []types.BaseVirtualDevice, files map[string]interface{}) []types.BaseVirtualDevice {
	return withBacking(devices, files, func(backing *types.VirtualDiskFlatVer2BackingInfo, file string) {
		backing.FileName = file
	})
}

// withBacking gives each disk that values names (by key) a changed backing. Copies, so that the VM's
// later changes never alter a snapshot's (which keeps its change ids and the files it froze).
func withBacking(devices []types.BaseVirtualDevice, values map[string]interface{},
	set func(*types.VirtualDiskFlatVer2BackingInfo, string)) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, len(devices))
	for i, dev := range devices {
		out[i] = dev
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		value, ok := values[strconv.Itoa(int(disk.Key))].(string)
		backing, isFlat := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok || !isFlat {
			continue
		}
		copyDisk, copyBacking := *disk, *backing
		set(&copyBacking, value)
		copyDisk.Backing = &copyBacking
		out[i] = &copyDisk
	}
	return out
}

// afterRemove renames the files the lab merged a removed snapshot's deltas into (its NFS datastore), on the
// VM and on the snapshots that named a merged delta.
func afterRemove(vmRef string, answer map[string]interface{}) {
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: vmRef}).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	if files, _ := answer["vm_files"].(map[string]interface{}); len(files) > 0 {
		simulator.Map.WithLock(vm, func() {
			vm.Config.Hardware.Device = setFiles(vm.Config.Hardware.Device, files)
		})
	}
	snapshots, _ := answer["snapshot_files"].(map[string]interface{})
	for ref, value := range snapshots {
		files, _ := value.(map[string]interface{})
		if snap, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: ref}).(*simulator.VirtualMachineSnapshot); ok {
			simulator.Map.WithLock(vm, func() {
				snap.Config.Hardware.Device = setFiles(snap.Config.Hardware.Device, files)
			})
		}
	}
}

// afterSnapshot gives the new snapshot of vmRef its point-in-time view and change ids.
func afterSnapshot(vmRef string) {
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: vmRef}).(*simulator.VirtualMachine)
	if !ok || vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil {
		return
	}
	ref := *vm.Snapshot.CurrentSnapshot
	cbt := "no-cbt"
	if vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled {
		cbt = "cbt"
	}
	answer, err := lab("snapshot-create", vmRef, ref.Value, cbt)
	if err != nil {
		log.Printf("snapshot %s of %s: %v", ref.Value, vmRef, err)
		return
	}
	ids, _ := answer["change_ids"].(map[string]interface{})
	files, _ := answer["files"].(map[string]interface{})
	snap := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	simulator.Map.WithLock(vm, func() {
		snap.Config.Hardware.Device = setChangeIDs(snap.Config.Hardware.Device, ids)
		vm.Config.Hardware.Device = setFiles(setChangeIDs(vm.Config.Hardware.Device, ids), files)
	})
}

// afterReconfig tells the lab what a ReconfigVM_Task changed that vCenter acts on in the disks:
// CBT switched off (vCenter then clears every disk's change id, and the tracking history is
// gone), disks grown (the lab resizes the image under the running storage daemon), disks added
// (a new empty image) and removed.
func afterReconfig(vmRef string) {
	vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: vmRef}).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	cbt := "cbt"
	disks := map[string]map[string]interface{}{}
	simulator.Map.WithLock(vm, func() {
		if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
			cbt = "no-cbt"
		}
		for _, dev := range vm.Config.Hardware.Device {
			if disk, isDisk := dev.(*types.VirtualDisk); isDisk {
				file := ""
				if backing, isFlat := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); isFlat {
					file = backing.FileName
				}
				disks[strconv.Itoa(int(disk.Key))] = map[string]interface{}{"capacity": disk.CapacityInBytes, "file": file}
			}
		}
	})
	described, _ := json.Marshal(disks)
	answer, err := lab("reconfigured", vmRef, cbt, string(described))
	if err != nil {
		log.Printf("reconfiguring %s: %v", vmRef, err)
		return
	}
	if answer["clear_change_ids"] == true {
		cleared := map[string]interface{}{}
		for key := range disks {
			cleared[key] = ""
		}
		simulator.Map.WithLock(vm, func() {
			vm.Config.Hardware.Device = setChangeIDs(vm.Config.Hardware.Device, cleared)
		})
	}
}

// afterRevert puts the VM's disks back to the snapshot's content (the lab reverts the images)
// and its change ids back to the snapshot's, as vCenter does; vcsim itself only moves the
// current-snapshot pointer.
func afterRevert(snapRef string) {
	snap, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: snapRef}).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	answer, err := lab("revert", snap.Vm.Value, snapRef)
	if err != nil {
		log.Printf("reverting %s to %s: %v", snap.Vm.Value, snapRef, err)
		return
	}
	ids, _ := answer["change_ids"].(map[string]interface{})
	vm, ok := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok || len(ids) == 0 {
		return
	}
	simulator.Map.WithLock(vm, func() {
		vm.Config.Hardware.Device = setChangeIDs(vm.Config.Hardware.Device, ids)
	})
}

// setVCenterVersion makes vCenter report a release (about.version), as a real one of that release does.
func setVCenterVersion(version string) {
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	simulator.Map.WithLock(si, func() {
		si.Content.About.Version = version
		si.Content.About.FullName = "VMware vCenter Server " + version + " build-lab"
	})
}

// setESXiVersion makes one host (or, with name "", every host) report an ESXi release in
// config.product and summary.config.product, as a host of that release does.
func setESXiVersion(name, version string) bool {
	found := false
	for _, entity := range simulator.Map.All("HostSystem") {
		host := entity.(*simulator.HostSystem)
		if name != "" && host.Name != name {
			continue
		}
		found = true
		simulator.Map.WithLock(host, func() {
			product := host.Config.Product
			product.Version = version
			product.FullName = "VMware ESXi " + version + " build-lab"
			host.Config.Product = product
			host.Summary.Config.Product = &product
		})
	}
	return found
}

// versions answers the lab's POST /lab/versions {"vcenter": "9.0.0"} or {"host": "DC0_H0", "esxi": "6.7.0"}:
// the tests move vCenter and a host between releases to see the preflight's verdicts.
func versions(w http.ResponseWriter, r *http.Request) {
	var change struct{ VCenter, Host, ESXi string }
	if err := json.NewDecoder(r.Body).Decode(&change); err != nil || r.Method != http.MethodPost {
		http.Error(w, "POST a JSON object: vcenter, or host and esxi", http.StatusBadRequest)
		return
	}
	if change.VCenter != "" {
		setVCenterVersion(change.VCenter)
	}
	if change.ESXi != "" && !setESXiVersion(change.Host, change.ESXi) {
		http.Error(w, "no host is named "+change.Host, http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// toolsNet holds, per VM (moref), what VMware Tools in its guest reports: each NIC's (by MAC) addresses
// as "10.10.1.50/24", the origin the tools give them (Windows' tools say "manual"; Linux's often nothing),
// and the guest's default gateway and DNS servers (guest.ipStack). populate.py reads them from the guest
// image's network configuration (or registry) and posts them to /lab/tools; VMs without a guest image have
// none, and vcsim's defaults stay.
type toolsReport struct {
	Nics    map[string][]string `json:"nics"`
	Origin  string              `json:"origin"`
	Gateway string              `json:"gateway"`
	DNS     []string            `json:"dns"`
}

var (
	toolsNet   = map[string]toolsReport{}
	toolsMutex sync.Mutex
)

// tools answers the lab's POST /lab/tools {"vm-60": {"nics": {"00:50:56:01:00:0a": ["10.10.1.50/24"]}}}.
func tools(w http.ResponseWriter, r *http.Request) {
	var posted map[string]toolsReport
	if err := json.NewDecoder(r.Body).Decode(&posted); err != nil || r.Method != http.MethodPost {
		http.Error(w, "POST a JSON object: VM moref -> {nics: MAC -> addresses, origin, gateway, dns}", http.StatusBadRequest)
		return
	}
	toolsMutex.Lock()
	toolsNet = posted
	toolsMutex.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// syncTools makes each guest's VMware Tools report what it would now: while the VM is powered on, the
// tools run, each NIC has its addresses (guest.net) and the guest its routes and DNS servers
// (guest.ipStack); once it is off, the tools stop and report none. Run before every property read,
// so the power state it follows is the one the reader sees.
func syncTools() {
	toolsMutex.Lock()
	defer toolsMutex.Unlock()
	for ref, report := range toolsNet {
		vm, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachine", Value: ref}).(*simulator.VirtualMachine)
		if !ok {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			on := vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn
			vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
			vm.Guest.IpStack = nil
			if on {
				vm.Guest.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
				if report.Gateway != "" || len(report.DNS) > 0 {
					stack := types.GuestStackInfo{DnsConfig: &types.NetDnsConfigInfo{IpAddress: report.DNS}}
					if report.Gateway != "" {
						stack.IpRouteConfig = &types.NetIpRouteConfigInfo{IpRoute: []types.NetIpRouteConfigInfoIpRoute{
							{Network: "0.0.0.0", PrefixLength: 0, Gateway: types.NetIpRouteConfigInfoGateway{IpAddress: report.Gateway, Device: "0"}},
						}}
					}
					vm.Guest.IpStack = []types.GuestStackInfo{stack}
				}
			}
			for i := range vm.Guest.Net {
				nic := &vm.Guest.Net[i]
				nic.IpAddress, nic.IpConfig = nil, nil
				if !on || len(report.Nics[nic.MacAddress]) == 0 {
					continue
				}
				config := &types.NetIpConfigInfo{}
				for _, address := range report.Nics[nic.MacAddress] {
					ip, prefix, _ := strings.Cut(address, "/")
					length, _ := strconv.Atoi(prefix)
					nic.IpAddress = append(nic.IpAddress, ip)
					config.IpAddress = append(config.IpAddress, types.NetIpConfigInfoIpAddress{IpAddress: ip, PrefixLength: int32(length), Origin: report.Origin})
				}
				nic.IpConfig = config
			}
		})
	}
}

// refreshDatastores sets every datastore's capacity and free space from the file system that holds
// the lab's disk images (where the VMs' data really lives), as vCenter reports its datastores'.
// vcsim would subtract each disk's full size when it is created, thin or not.
func refreshDatastores() {
	var stat syscall.Statfs_t
	if err := syscall.Statfs(datastoreDir, &stat); err != nil {
		log.Printf("datastore space from %s: %v", datastoreDir, err)
		return
	}
	for _, entity := range simulator.Map.All("Datastore") {
		ds := entity.(*simulator.Datastore)
		simulator.Map.WithLock(ds, func() {
			ds.Summary.Capacity = int64(stat.Blocks * uint64(stat.Frsize))
			ds.Summary.FreeSpace = int64(stat.Bavail * uint64(stat.Frsize))
			ds.Info.GetDatastoreInfo().FreeSpace = ds.Summary.FreeSpace
		})
	}
}

var datastoreDir string

func middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lab/versions" {
			versions(w, r)
			return
		}
		if r.URL.Path == "/lab/tools" {
			tools(w, r)
			return
		}
		if r.URL.Path == "/api" && r.Method == http.MethodPost {
			vapiJSONRPC(next, w, r)
			return
		}
		if r.URL.Path == "/rest/com/vmware/cis/session" && r.Method == http.MethodPost &&
			r.URL.Query().Get("~action") == "" && !checkRESTLogin(r) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		method, req := parse(body)
		if strings.HasPrefix(method, "RetrieveProperties") || strings.HasPrefix(method, "WaitForUpdates") {
			syncTools()
		}
		switch method {
		case "QueryChangedDiskAreas":
			queryChangedDiskAreas(w, req)
			return
		case "ShutdownGuest":
			if answer, err := lab("guest-ignores-shutdown", req.This); err == nil && answer["ignores"] == true {
				reply(w, http.StatusOK, `<ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse>`)
				return
			}
		case "RemoveSnapshot_Task":
			if snap, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: req.This}).(*simulator.VirtualMachineSnapshot); ok {
				if answer, err := lab("snapshot-remove", snap.Vm.Value, req.This); err != nil {
					log.Printf("removing snapshot %s: %v", req.This, err)
				} else {
					afterRemove(snap.Vm.Value, answer)
				}
			}
		case "RevertToSnapshot_Task":
			next.ServeHTTP(w, r)
			afterRevert(req.This)
			return
		case "RemoveAllSnapshots_Task":
			if answer, err := lab("snapshot-remove-all", req.This); err != nil {
				log.Printf("removing the snapshots of %s: %v", req.This, err)
			} else {
				afterRemove(req.This, answer)
			}
		}
		next.ServeHTTP(w, r)
		switch method {
		case "CreateSnapshot_Task":
			afterSnapshot(req.This)
			refreshDatastores()
		case "ReconfigVM_Task":
			afterReconfig(req.This)
			refreshDatastores()
		}
	})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8989", "address to serve on")
	machines := flag.Int("vms", 4, "VMs per host and per resource pool (up.sh asks for 8: 16 VMs, the lab shapes 15)")
	helperCmd := flag.String("helper", "", "the lab helper: a JSON list, the argv of lab/vsphere/cbt.py")
	ready := flag.String("ready", "", "write the server URL here once serving")
	username := flag.String("username", "migrator@vsphere.local", "the lab's vCenter user")
	vcenterVersion := flag.String("vcenter-version", "8.0.3", "the release vCenter reports")
	esxiVersion := flag.String("esxi-version", "8.0.3", "the release every ESXi host reports")
	flag.StringVar(&datastoreDir, "datastore-dir", "", "the directory of the lab's disk images: the datastores' space is its file system's")
	flag.Parse()
	if err := json.Unmarshal([]byte(*helperCmd), &helper); err != nil || len(helper) == 0 {
		log.Fatalf("-helper must be a JSON list: %v", err)
	}
	// The guest OS ids this govmomi's vcsim accepts end with Windows Server 2016 and Debian 10; the vCenter the
	// lab plays (8.0) also takes the later ones, which the lab's Windows and Debian VMs have.
	simulator.GuestID = append(simulator.GuestID,
		types.VirtualMachineGuestOsIdentifierWindows2019srv_64Guest,
		types.VirtualMachineGuestOsIdentifierWindows2019srvNext_64Guest,
		types.VirtualMachineGuestOsIdentifier("debian12_64Guest"))

	model := simulator.VPX()
	model.Machine = *machines
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	setVCenterVersion(*vcenterVersion)
	setESXiVersion("", *esxiVersion)
	if datastoreDir == "" {
		log.Fatal("-datastore-dir must name the directory of the lab's disk images")
	}
	refreshDatastores()
	// A login of our own: with vcsim's default one it would accept any password.
	password := os.Getenv("XMS_LAB_VCENTER_PASSWORD")
	if password == "" {
		log.Fatal("XMS_LAB_VCENTER_PASSWORD must hold the lab's vCenter password")
	}
	labUser, labPassword = *username, password
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, password)}
	model.Service.TLS = new(tls.Config)
	model.Service.RegisterEndpoints = true // vcsim's REST endpoints (tagging)
	server := model.Service.NewServer()
	server.Server.Config.Handler = middleware(server.Server.Config.Handler)
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(server.URL.String()), 0o600); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving %s:%s", server.URL.Hostname(), server.URL.Port()) // the URL holds the password
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
	model.Remove()
}
