# Vigil: multi-stage build. The build stage compiles TypeScript; the runtime stage holds the
# production dependencies, the compiled code and nothing else, and runs as the `node` user.
#   docker build -t vigil .
#   docker run -p 1883:1883 -p 9464:9464 vigil

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# scripts off: `prepare` would compile before the sources are copied
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
# non-TypeScript assets (the Lua scripts, the console's static files) are read from src/ at run time
COPY --from=build /app/src ./src
USER node
# MQTT, MQTT over TLS, MQTT over WebSocket, HTTP (metrics, health, admin API)
EXPOSE 1883 8883 8083 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9464/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
CMD ["node", "dist/src/cli.js"]
