# palisade: Kubernetes NetworkPolicy enforcement with iptables and ipsets.
#   docker build -t palisade:0.1.0 .
# For x86 and Graviton nodes alike, one multi-arch image:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/palisade:0.1.0 --push .
# Node.js 24 LTS, Debian slim: the build stage compiles with the dev dependencies, the runtime stage
# carries only the compiled output, the production dependencies and the netfilter tools.

# The build stage runs on the builder's own platform (its output is JavaScript, the same for every
# architecture); the runtime stage is the target's, with the target's iptables, ipset and ulogd.
FROM --platform=$BUILDPLATFORM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The image already has Node.js 24: skip the "node" devDependency's download of its own binary.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY rules ./rules
COPY lib ./lib
COPY daemon ./daemon
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts

FROM node:24-bookworm-slim
# Both iptables backends (iptables-legacy-* and iptables-nft-*), ipset, conntrack, iproute2 (the
# node's links, addresses and routes: multi-NIC pods, kube-proxy's mode, pods palisade does not see),
# and ulogd with its JSON plugin, which reads the drop log's NFLOG records for palisade.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ipset conntrack iproute2 ulogd2 ulogd2-json \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/rules ./dist/rules
COPY --from=build /src/dist/lib ./dist/lib
COPY --from=build /src/dist/daemon ./dist/daemon
COPY manifests/examples ./manifests/examples
ENV NODE_ENV=production
# No shell: the kernel runs node directly, so SIGTERM reaches palisade and its rules stay in place.
# No V8 flags either: the daemon sets up its own runtime (daemon/runtime.ts), however it is started.
ENTRYPOINT ["node", "/app/dist/daemon/main.js"]
CMD ["daemon"]
