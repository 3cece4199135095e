// vCenter's vAPI JSON-RPC endpoint (POST /api), which the vSphere Automation SDK for Python speaks and vcsim lacks:
// vcsim serves tagging only over its REST paths (/rest/com/vmware/cis/...). Each call is translated into the REST
// request that vcsim answers from its own tagging state, and the answer is put back into vAPI's JSON-RPC data
// encoding (a structure is {"STRUCTURE": {"<type>": {fields}}}, a secret {"SECRET": "..."}, an error
// {"ERROR": {"<type>": {fields}}} in the result). Only the operations a dynamic inventory reads are translated
// (vmware.vmware.vms with gather_tags): session create/delete, tag and category get/list, the tags attached to an
// object; anything else gets the "operation not found" error vCenter gives for an unknown operation.
package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
)

// The lab's vCenter login; vcsim's REST session accepts any non-empty one, vCenter does not.
var labUser, labPassword string

type vapiCall struct {
	ID     json.RawMessage `json:"id"`
	Params struct {
		ServiceID   string `json:"serviceId"`
		OperationID string `json:"operationId"`
		Input       struct {
			Structure struct {
				Fields map[string]json.RawMessage `json:"operation-input"`
			} `json:"STRUCTURE"`
		} `json:"input"`
		Ctx struct {
			Security struct {
				SchemeID  string `json:"schemeId"`
				UserName  string `json:"userName"`
				Password  string `json:"password"`
				SessionID string `json:"sessionId"`
			} `json:"securityCtx"`
		} `json:"ctx"`
	} `json:"params"`
}

// A model's fields with the value vAPI gives a field REST leaves out (vcsim omits empty ones).
type vapiModel struct {
	name   string
	fields map[string]interface{}
}

var tagModel = vapiModel{"com.vmware.cis.tagging.tag_model", map[string]interface{}{
	"id": "", "category_id": "", "name": "", "description": "", "used_by": []interface{}{},
}}

var categoryModel = vapiModel{"com.vmware.cis.tagging.category_model", map[string]interface{}{
	"id": "", "name": "", "description": "", "cardinality": "SINGLE", "associable_types": []interface{}{},
	"used_by": []interface{}{},
}}

func (m vapiModel) encode(value map[string]interface{}) map[string]interface{} {
	fields := map[string]interface{}{}
	for name, empty := range m.fields {
		if v, ok := value[name]; ok && v != nil {
			fields[name] = v
		} else {
			fields[name] = empty
		}
	}
	return map[string]interface{}{"STRUCTURE": map[string]interface{}{m.name: fields}}
}

func vapiError(kind string) map[string]interface{} {
	fields := map[string]interface{}{
		"messages":   []interface{}{},
		"data":       map[string]interface{}{"OPTIONAL": nil},
		"error_type": map[string]interface{}{"OPTIONAL": nil},
	}
	if kind == "unauthenticated" {
		fields["challenge"] = map[string]interface{}{"OPTIONAL": nil}
	}
	return map[string]interface{}{"error": map[string]interface{}{
		"ERROR": map[string]interface{}{"com.vmware.vapi.std.errors." + kind: fields},
	}}
}

// rest runs one request through vcsim's REST handler and returns its status and its "value".
func rest(next http.Handler, method, path, session string, body interface{}) (int, interface{}) {
	var payload []byte
	if body != nil {
		payload, _ = json.Marshal(body)
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(payload))
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set("vmware-api-session-id", session)
	}
	if method == http.MethodPost && path == "/rest/com/vmware/cis/session" {
		req.SetBasicAuth(labUser, labPassword)
	}
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, req)
	var answer struct {
		Value interface{} `json:"value"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &answer)
	return rec.Code, answer.Value
}

func field(call *vapiCall, name string) string {
	var s string
	_ = json.Unmarshal(call.Params.Input.Structure.Fields[name], &s)
	return s
}

// invoke answers one call: a JSON-RPC result holding {"output": ...} or {"error": ...}.
func invoke(next http.Handler, call *vapiCall) map[string]interface{} {
	sec := call.Params.Ctx.Security
	op := call.Params.ServiceID + "/" + call.Params.OperationID
	if op == "com.vmware.cis.session/create" {
		if sec.SchemeID != "com.vmware.vapi.std.security.user_pass" ||
			subtle.ConstantTimeCompare([]byte(sec.UserName), []byte(labUser)) != 1 ||
			subtle.ConstantTimeCompare([]byte(sec.Password), []byte(labPassword)) != 1 {
			return vapiError("unauthenticated")
		}
		_, id := rest(next, http.MethodPost, "/rest/com/vmware/cis/session", "", nil)
		return map[string]interface{}{"output": map[string]interface{}{"SECRET": id}}
	}
	session := sec.SessionID
	if code, _ := rest(next, http.MethodPost, "/rest/com/vmware/cis/session?~action=get", session, nil); session == "" || code != http.StatusOK {
		return vapiError("unauthenticated")
	}
	var code int
	var value interface{}
	var model *vapiModel
	switch op {
	case "com.vmware.cis.session/delete":
		code, _ = rest(next, http.MethodDelete, "/rest/com/vmware/cis/session", session, nil)
		value = nil
	case "com.vmware.cis.tagging.tag/get":
		code, value = rest(next, http.MethodGet, "/rest/com/vmware/cis/tagging/tag/id:"+url.PathEscape(field(call, "tag_id")), session, nil)
		model = &tagModel
	case "com.vmware.cis.tagging.category/get":
		code, value = rest(next, http.MethodGet, "/rest/com/vmware/cis/tagging/category/id:"+url.PathEscape(field(call, "category_id")), session, nil)
		model = &categoryModel
	case "com.vmware.cis.tagging.tag/list":
		code, value = rest(next, http.MethodGet, "/rest/com/vmware/cis/tagging/tag", session, nil)
	case "com.vmware.cis.tagging.category/list":
		code, value = rest(next, http.MethodGet, "/rest/com/vmware/cis/tagging/category", session, nil)
	case "com.vmware.cis.tagging.tag_association/list_attached_tags":
		var object struct {
			Structure map[string]map[string]string `json:"STRUCTURE"`
		}
		_ = json.Unmarshal(call.Params.Input.Structure.Fields["object_id"], &object)
		id := object.Structure["com.vmware.vapi.std.dynamic_ID"]
		code, value = rest(next, http.MethodPost, "/rest/com/vmware/cis/tagging/tag-association?~action=list-attached-tags",
			session, map[string]interface{}{"object_id": map[string]string{"type": id["type"], "id": id["id"]}})
	default:
		return vapiError("operation_not_found")
	}
	switch {
	case code == http.StatusNotFound:
		return vapiError("not_found")
	case code != http.StatusOK:
		return vapiError("error")
	case model != nil:
		object, _ := value.(map[string]interface{})
		return map[string]interface{}{"output": model.encode(object)}
	case value == nil && op != "com.vmware.cis.session/delete":
		return map[string]interface{}{"output": []interface{}{}} // vcsim leaves an empty list out
	}
	return map[string]interface{}{"output": value}
}

func vapiJSONRPC(next http.Handler, w http.ResponseWriter, r *http.Request) {
	var call vapiCall
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewDecoder(r.Body).Decode(&call); err != nil {
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error."}}`)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"jsonrpc": "2.0", "id": call.ID, "result": invoke(next, &call)})
}

// checkRESTLogin refuses a REST session for a login other than the lab's, as vCenter does; vcsim takes any.
func checkRESTLogin(r *http.Request) bool {
	user, password, ok := r.BasicAuth()
	return ok && subtle.ConstantTimeCompare([]byte(user), []byte(labUser)) == 1 &&
		subtle.ConstantTimeCompare([]byte(password), []byte(labPassword)) == 1
}
