export default function Page() {
  return <p>imgopt parity app: only its public/ folder, API routes and /_next/image are used.</p>
}
