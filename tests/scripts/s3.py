#!/usr/bin/env python3
"""Test helper: upload a directory to an S3 endpoint (moto) with boto3.

usage: s3.py put ENDPOINT BUCKET PREFIX DIR     # creates the bucket if needed
       s3.py putfile ENDPOINT BUCKET KEY FILE
       s3.py stamps ENDPOINT BUCKET PREFIX   # "KEY ETAG LAST-MODIFIED SIZE" per object
"""
import os
import sys

import boto3


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="musefs-test", aws_secret_access_key="musefs-test-secret")


def main():
    cmd, endpoint, bucket = sys.argv[1:4]
    s3 = client(endpoint)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    if cmd == "put":
        prefix, root = sys.argv[4:6]
        n = 0
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                s3.upload_file(path, bucket, f"{prefix}/{rel}" if prefix else rel)
                n += 1
        print(n)
    elif cmd == "stamps":
        prefix = sys.argv[4]
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for o in page.get("Contents", []):
                print(o["Key"], o["ETag"], o["LastModified"].isoformat(), o["Size"])
    elif cmd == "putfile":
        key, path = sys.argv[4:6]
        s3.upload_file(path, bucket, key)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
