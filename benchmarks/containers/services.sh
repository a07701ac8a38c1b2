#!/bin/sh
# Hand-run step of the container journey (docs/benchmarks.md, "Containers"); not yet `make cluster-local`.
# Uses the images of `make images IMAGE_REGISTRY=127.0.0.1:5055/sifthinker` and Debian's docker CLI.
mkdir -p "${STATE:-work/containers}"
# Services for the container run (cluster topology on one machine): PostgreSQL and MLflow from our images,
# moto's S3 server as a process. Ports: PG 55432, MLflow 55000, S3 55555.
set -eu
D=/usr/bin/docker
R=127.0.0.1:5055/sifthinker
$D rm -f i19-pg i19-mlflow >/dev/null 2>&1 || true
$D run -d --name i19-pg --network host -e POSTGRES_USER=mlflow -e POSTGRES_PASSWORD=mlflowpw -e POSTGRES_DB=mlflow \
  $R/sifthinker-postgres:0.1.0 postgres -p 55432 >/dev/null
if [ ! -f ${STATE:-work/containers}/moto.pid ] || ! kill -0 $(cat ${STATE:-work/containers}/moto.pid) 2>/dev/null; then
  nohup .venv/bin/moto_server -H 127.0.0.1 -p 55555 > ${STATE:-work/containers}/moto.log 2>&1 &
  echo $! > ${STATE:-work/containers}/moto.pid
fi
sleep 4
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing .venv/bin/python -c "
import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:55555', region_name='us-east-1').create_bucket(Bucket='sifthinker-artifacts')"
$D run -d --name i19-mlflow --network host -e AWS_ACCESS_KEY_ID=testing -e AWS_SECRET_ACCESS_KEY=testing \
  -e AWS_DEFAULT_REGION=us-east-1 -e MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:55555 \
  $R/sifthinker-mlflow:0.1.0 mlflow server --backend-store-uri postgresql://mlflow:mlflowpw@127.0.0.1:55432/mlflow \
  --artifacts-destination s3://sifthinker-artifacts --host 127.0.0.1 --port 55000 >/dev/null
for i in $(seq 60); do curl -sf http://127.0.0.1:55000/health >/dev/null && break; sleep 2; done
curl -sf http://127.0.0.1:55000/health && echo " mlflow up"
