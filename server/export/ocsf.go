package export

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/internal/buildinfo"
	"github.com/vigil-edge/vigil/server/store"
)

// OCSF constants of the Detection Finding class (OCSF 1.3).
const (
	OCSFVersion         = "1.3.0"
	OCSFClassUID        = 2004
	OCSFClassName       = "Detection Finding"
	OCSFCategoryUID     = 2
	OCSFCategoryName    = "Findings"
	OCSFActivityCreate  = 1
	OCSFTypeUIDCreate   = OCSFClassUID*100 + OCSFActivityCreate
	ProductName         = "Vigil"
	VendorName          = "Vigil"
	analyticTypeLearned = 4 // OCSF analytic type_id 4: "Learning (ML/DL)"
)

// OCSFFinding is one finding as an OCSF Detection Finding event. Field
// names and types follow the OCSF schema; times are epoch milliseconds.
type OCSFFinding struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int    `json:"type_uid"`
	TypeName     string `json:"type_name"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	StatusID     int    `json:"status_id"`
	Status       string `json:"status"`
	Time         int64  `json:"time"`
	Message      string `json:"message,omitempty"`
	// RiskScore is the model's score relative to its threshold, x100
	// (100 = at threshold).
	RiskScore   int              `json:"risk_score,omitempty"`
	Count       uint64           `json:"count,omitempty"`
	StartTime   int64            `json:"start_time,omitempty"`
	EndTime     int64            `json:"end_time,omitempty"`
	FindingInfo OCSFFindingInfo  `json:"finding_info"`
	Metadata    OCSFMetadata     `json:"metadata"`
	Device      *OCSFDevice      `json:"device,omitempty"`
	Evidences   []OCSFEvidence   `json:"evidences,omitempty"`
	Observables []OCSFObservable `json:"observables,omitempty"`
	Unmapped    map[string]any   `json:"unmapped,omitempty"`
}

// OCSFFindingInfo is the OCSF finding_info object.
type OCSFFindingInfo struct {
	UID           string        `json:"uid"`
	Title         string        `json:"title"`
	Desc          string        `json:"desc,omitempty"`
	Types         []string      `json:"types,omitempty"`
	FirstSeenTime int64         `json:"first_seen_time,omitempty"`
	LastSeenTime  int64         `json:"last_seen_time,omitempty"`
	CreatedTime   int64         `json:"created_time,omitempty"`
	Analytic      *OCSFAnalytic `json:"analytic,omitempty"`
	ProductUID    string        `json:"product_uid,omitempty"`
}

// OCSFAnalytic names the model that raised the finding.
type OCSFAnalytic struct {
	Name    string `json:"name"`
	UID     string `json:"uid,omitempty"`
	Version string `json:"version,omitempty"`
	TypeID  int    `json:"type_id"`
	Type    string `json:"type"`
}

// OCSFMetadata is the OCSF metadata object.
type OCSFMetadata struct {
	Version       string      `json:"version"`
	Product       OCSFProduct `json:"product"`
	UID           string      `json:"uid"`
	TenantUID     string      `json:"tenant_uid,omitempty"`
	LoggedTime    int64       `json:"logged_time,omitempty"`
	OriginalTime  string      `json:"original_time,omitempty"`
	CorrelationID string      `json:"correlation_uid,omitempty"`
}

// OCSFProduct is the OCSF product object.
type OCSFProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	Version    string `json:"version,omitempty"`
	Feature    *struct {
		Name string `json:"name"`
	} `json:"feature,omitempty"`
}

// OCSFDevice is the sensor (agent) that raised the finding.
type OCSFDevice struct {
	UID    string `json:"uid"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
	Org    *struct {
		Name string `json:"name"`
	} `json:"org,omitempty"`
}

// OCSFEndpoint is a network endpoint.
type OCSFEndpoint struct {
	IP   string `json:"ip,omitempty"`
	Port uint32 `json:"port,omitempty"`
	MAC  string `json:"mac,omitempty"`
}

// OCSFEvidence is one evidence artifact.
type OCSFEvidence struct {
	SrcEndpoint    *OCSFEndpoint       `json:"src_endpoint,omitempty"`
	DstEndpoint    *OCSFEndpoint       `json:"dst_endpoint,omitempty"`
	ConnectionInfo *OCSFConnectionInfo `json:"connection_info,omitempty"`
	File           *OCSFFile           `json:"file,omitempty"`
	Data           map[string]any      `json:"data,omitempty"`
}

// OCSFConnectionInfo carries the protocol.
type OCSFConnectionInfo struct {
	ProtocolName string `json:"protocol_name,omitempty"`
	ProtocolNum  int    `json:"protocol_num,omitempty"`
}

// OCSFFile is a file path.
type OCSFFile struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	TypeID int    `json:"type_id"`
}

// OCSFObservable is an indexed value (IP address, file path).
type OCSFObservable struct {
	Name   string `json:"name"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type"`
	Value  string `json:"value"`
}

// ocsfSeverity maps Vigil's severity names to OCSF severity_id.
func ocsfSeverity(s string) (int, string) {
	switch s {
	case "low":
		return 2, "Low"
	case "medium":
		return 3, "Medium"
	case "high":
		return 4, "High"
	case "critical":
		return 5, "Critical"
	}
	return 0, "Unknown"
}

// ocsfStatus maps triage status to OCSF status_id.
func ocsfStatus(s string) (int, string) {
	switch s {
	case store.StatusNew, "":
		return 1, "New"
	case store.StatusAcknowledged:
		return 2, "In Progress"
	case store.StatusFalsePositive:
		return 3, "Suppressed"
	case store.StatusResolved:
		return 4, "Resolved"
	}
	return 99, "Other"
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func protoNum(p string) int {
	switch p {
	case "tcp", "TCP":
		return 6
	case "udp", "UDP":
		return 17
	case "icmp", "ICMP":
		return 1
	case "icmpv6", "ICMPv6", "ipv6-icmp":
		return 58
	}
	return 0
}

// FindingUID is the stable, deployment-wide identity of a finding: the
// agent and its sequence number (the store's id is local to one database).
func FindingUID(f store.Finding) string {
	return f.AgentID + ":" + strconv.FormatUint(f.Seq, 10)
}

// ToOCSF maps a finding to an OCSF Detection Finding (activity Create).
func ToOCSF(f store.Finding) OCSFFinding {
	sevID, sev := ocsfSeverity(f.Severity)
	stID, st := ocsfStatus(f.Status)
	title := f.Summary
	if title == "" {
		title = f.Detector + " anomaly"
	}
	o := OCSFFinding{
		ActivityID: OCSFActivityCreate, ActivityName: "Create",
		CategoryUID: OCSFCategoryUID, CategoryName: OCSFCategoryName,
		ClassUID: OCSFClassUID, ClassName: OCSFClassName,
		TypeUID: OCSFTypeUIDCreate, TypeName: OCSFClassName + ": Create",
		SeverityID: sevID, Severity: sev, StatusID: stID, Status: st,
		Time: ms(f.Time), Message: title, Count: f.Count,
		StartTime: ms(f.FirstSeen), EndTime: ms(f.LastSeen),
		FindingInfo: OCSFFindingInfo{
			UID: FindingUID(f), Title: title,
			Desc:          fmt.Sprintf("%s detector: anomaly score %.4g (threshold %.4g) on %s", f.Detector, f.Score, f.Threshold, f.AgentID),
			Types:         []string{"Anomaly", f.Detector},
			FirstSeenTime: ms(f.FirstSeen), LastSeenTime: ms(f.LastSeen), CreatedTime: ms(f.ReceivedAt),
			ProductUID: f.Detector,
		},
		Metadata: OCSFMetadata{
			Version:    OCSFVersion,
			Product:    OCSFProduct{Name: ProductName, VendorName: VendorName, Version: buildinfo.Version},
			UID:        FindingUID(f),
			TenantUID:  f.Entity,
			LoggedTime: ms(f.ReceivedAt),
		},
		Device: &OCSFDevice{UID: f.AgentID, TypeID: 0, Type: "Unknown"},
	}
	if f.Entity != "" {
		o.Device.Org = &struct {
			Name string `json:"name"`
		}{f.Entity}
	}
	if f.Threshold > 0 {
		r := f.Score / f.Threshold * 100
		if r > 1e6 {
			r = 1e6
		}
		o.RiskScore = int(r)
	}
	if f.Model.Name != "" {
		o.FindingInfo.Analytic = &OCSFAnalytic{Name: f.Model.Name, UID: f.Model.Digest,
			Version: strconv.FormatUint(f.Model.Version, 10), TypeID: analyticTypeLearned, Type: "Learning (ML/DL)"}
	}
	c := f.Context
	var ev OCSFEvidence
	if c.SrcIP != "" || c.SrcPort != 0 || c.SrcMAC != "" {
		ev.SrcEndpoint = &OCSFEndpoint{IP: c.SrcIP, Port: c.SrcPort, MAC: c.SrcMAC}
		if c.SrcIP != "" {
			o.Observables = append(o.Observables, OCSFObservable{Name: "evidences[0].src_endpoint.ip", TypeID: 2, Type: "IP Address", Value: c.SrcIP})
		}
	}
	if c.DstIP != "" || c.DstPort != 0 {
		ev.DstEndpoint = &OCSFEndpoint{IP: c.DstIP, Port: c.DstPort}
		if c.DstIP != "" {
			o.Observables = append(o.Observables, OCSFObservable{Name: "evidences[0].dst_endpoint.ip", TypeID: 2, Type: "IP Address", Value: c.DstIP})
		}
	}
	if c.Proto != "" {
		ev.ConnectionInfo = &OCSFConnectionInfo{ProtocolName: c.Proto, ProtocolNum: protoNum(c.Proto)}
	}
	if c.Path != "" {
		ev.File = &OCSFFile{Name: baseName(c.Path), Path: c.Path, TypeID: 1}
		o.Observables = append(o.Observables, OCSFObservable{Name: "evidences[0].file.path", TypeID: 7, Type: "File Name", Value: c.Path})
	}
	top := make([]map[string]any, 0, len(f.TopFeatures))
	for _, t := range f.TopFeatures {
		top = append(top, map[string]any{"name": t.Name, "contribution": t.Contribution})
	}
	ev.Data = map[string]any{"score": f.Score, "threshold": f.Threshold, "top_features": top}
	if f.Packets > 0 || f.Bytes > 0 {
		ev.Data["packets"], ev.Data["bytes"] = f.Packets, f.Bytes
	}
	if l := f.LeadIn; l != nil {
		// The source's traffic before the first anomalous packet: not
		// part of the finding's events, so start_time stays first_seen.
		ev.Data["lead_in"] = map[string]any{"since_time": ms(l.Since), "packets": l.Packets, "bytes": l.Bytes}
	}
	o.Evidences = []OCSFEvidence{ev}
	o.Unmapped = map[string]any{"vigil": map[string]any{
		"id": f.ID, "entity": f.Entity, "agent_id": f.AgentID, "seq": f.Seq, "detector": f.Detector,
		"model": f.Model, "status": f.Status, "assignee": f.Assignee,
	}}
	return o
}

// baseName is the last element of a sensor's path. Sensors are Linux ('/'
// alone separates names), and their paths arrive escaped (event.SafePath:
// a backslash starts an escape such as \xe9, never a separator).
func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
