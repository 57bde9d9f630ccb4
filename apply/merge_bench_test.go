package apply

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/serenorg/postgres-seren-replicator/stream"
)

// insertMessage renders a pgoutput Insert of (id, payload, 0) into relation
// 1, as the source sends it for the benchmark's table big (id bigint primary
// key, payload text, n int).
func insertMessage(id int) []byte {
	vals := [][]byte{fmt.Appendf(nil, "%d", id), fmt.Appendf(nil, "%032x%s", id, make100('p')), []byte("0")}
	b := []byte{'I', 0, 0, 0, 1, 'N'}
	b = binary.BigEndian.AppendUint16(b, uint16(len(vals)))
	for _, v := range vals {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func make100(c byte) []byte {
	p := make([]byte, 100)
	for i := range p {
		p[i] = c
	}
	return p
}

// BenchmarkInsertPath measures what our process does per row of a large
// insert-only transaction in replica mode: decode the pgoutput message, fold
// it into the batch, and encode the table's rows for COPY every
// DefaultMaxBatchChanges rows, as emitMerged does. The connection is left
// out: this is the CPU our process spends per row.
func BenchmarkInsertPath(b *testing.B) {
	const rows = 100_000
	msgs := make([][]byte, rows)
	for i := range msgs {
		msgs[i] = insertMessage(i + 1)
	}
	r := testRelation(1)
	a := &Applier{replicaMode: true}
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0])))
	i := 0
	for b.Loop() {
		m, err := stream.Decode(msgs[i%rows])
		if err != nil {
			b.Fatal(err)
		}
		i++
		ins := m.(*stream.Insert)
		if ins.RelationID != 1 {
			b.Fatalf("relation %d", ins.RelationID)
		}
		if ok, err := a.merge(1, r, m); !ok || err != nil {
			b.Fatalf("merge: %v, %v", ok, err)
		}
		if a.merged.count >= DefaultMaxBatchChanges || i%rows == 0 {
			var p pipeline
			for _, id := range a.merged.order {
				plan := a.merged.tables[id].plan()
				p.addCopy(r.copySQL(), plan.inserts, stmtInfo{})
			}
			a.merged.reset()
		}
	}
}
