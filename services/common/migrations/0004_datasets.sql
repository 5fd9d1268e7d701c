-- Datasets: named, labelled collections of recorded cycles ("save as dataset"), for reports,
-- later analysis and training. A cycle is in a dataset at most once; filing it again updates
-- its label and note.

CREATE TABLE IF NOT EXISTS live_dataset_cycles (
    dataset   text NOT NULL,
    cycle_id  text NOT NULL,
    stream_id text NOT NULL,
    label     text NOT NULL DEFAULT '',
    note      text NOT NULL DEFAULT '',
    added_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, cycle_id)
);
CREATE INDEX IF NOT EXISTS live_dataset_cycles_stream ON live_dataset_cycles (stream_id);
